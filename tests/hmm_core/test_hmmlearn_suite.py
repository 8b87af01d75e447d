"""hmmlearn 0.3.3's own tests of PoissonHMM, CategoricalHMM and GaussianHMM, run against hmm_core.

The installed hmmlearn's test files are copied to a temporary package at run time with only
the import of the model module changed (``from hmmlearn import hmm`` and ``from .. import hmm``
become ``import hmm_core as hmm``); their helpers still come from hmmlearn. They run in a
child pytest and every failing test id is printed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SUITE_FILES = ["test_poisson_hmm.py", "test_categorical_hmm.py", "test_gaussian_hmm.py"]
HELPER_FILES = ["__init__.py", "conftest.py"]
MODEL_IMPORTS = [
    (re.compile(r"^from hmmlearn import hmm$", re.MULTILINE), "import hmm_core as hmm"),
    (re.compile(r"^from \.\. import hmm$", re.MULTILINE), "import hmm_core as hmm"),
]
REQUIRED_PASS_RATE = 0.90
REPOSITORY = Path(__file__).resolve().parents[2]


def hmmlearn_tests_folder() -> Path:
    spec = importlib.util.find_spec("hmmlearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("hmmlearn is not installed (pip install -e '.[test]')")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tests"
    if not all((folder / name).is_file() for name in SUITE_FILES + HELPER_FILES):
        pytest.skip(f"the installed hmmlearn has no test files in {folder}")
    return folder


def copy_with_our_models(source: Path, target: Path) -> None:
    """Copy the suite into target/hmmlearn_suite, changing only the model imports."""
    package = target / "hmmlearn_suite"
    package.mkdir()
    for name in HELPER_FILES:
        (package / name).write_text((source / name).read_text())
    for name in SUITE_FILES:
        text = (source / name).read_text()
        replaced = 0
        for pattern, replacement in MODEL_IMPORTS:
            text, count = pattern.subn(replacement, text)
            replaced += count
        assert replaced == 1, f"{name}: expected one import of hmmlearn's hmm module"
        (package / name).write_text(text)


def run_suite(folder: Path, seed: int) -> tuple[list[str], list[str], str]:
    """Run the copied suite; returns (passed ids, failed ids, output)."""
    environment = dict(os.environ, HMMLEARN_SEED=str(seed), PYTHONPATH=str(REPOSITORY))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-o",
            "testpaths=",
            "-q",
            "-rA",
            "--rootdir",
            str(folder),
            "--timeout",
            "600",
            str(folder / "hmmlearn_suite"),
        ],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = completed.stdout + completed.stderr
    passed = re.findall(r"^PASSED (\S+)", output, re.MULTILINE)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return passed, failed, output


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 12345])
def test_hmmlearn_suite_passes_against_hmm_core(tmp_path: Path, seed: int) -> None:
    copy_with_our_models(hmmlearn_tests_folder(), tmp_path)
    passed, failed, output = run_suite(tmp_path, seed)
    total = len(passed) + len(failed)
    assert total > 100, f"the suite did not run as expected:\n{output[-3000:]}"
    for test_id in failed:
        print(f"failing hmmlearn test: {test_id}")
    rate = len(passed) / total
    print(f"hmmlearn suite with seed {seed}: {len(passed)} of {total} passed ({rate:.1%})")
    assert rate >= REQUIRED_PASS_RATE, f"{len(failed)} failed:\n" + "\n".join(failed)
