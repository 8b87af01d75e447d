"""Test helpers: a repo whose deterministic model reads a git-ignored data folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner, Result

from agent.cli import main
from tests.agent.runs.gitrepo import PYTHON, make_repo

DETERMINISTIC_SCRIPT = textwrap.dedent(
    """\
    import json, os, pathlib, time
    from helper import SCALE
    hold = os.environ.get("WK_TEST_HOLD")
    if hold:
        deadline = time.time() + 60
        while not pathlib.Path(hold).exists() and time.time() < deadline:
            time.sleep(0.02)
    total = float(os.environ.get("WK_TEST_NOISE", "0"))
    for path in sorted(pathlib.Path("data").rglob("*.csv")):
        for line in path.read_text().splitlines()[1:]:
            total += float(line.split(",")[1])
    pathlib.Path("model.bin").write_text("weights %r\\n" % (total * SCALE))
    json.dump({"total": total * SCALE, "scale": SCALE}, open("metrics.json", "w"))
    """
)


def reproducible_spec(extra: str = "", remote: str = "local") -> str:
    return (
        textwrap.dedent(
            f"""\
        [models.churn]
        train = "{PYTHON} train.py"
        deps = ["train.py", "helper.py", "data"]
        outs = ["model.bin"]
        metrics = "metrics.json"
        remote = "{remote}"
        """
        )
        + extra
    )


def make_data_repo(folder: Path, spec: str | None = None, *, python: str | None = None) -> Path:
    """A repo with train.py, helper.py and a git-ignored data/ of three CSV files."""
    text = spec or reproducible_spec()
    if python is not None:
        text = text.replace(PYTHON, python)
    root = make_repo(
        folder,
        files={
            "train.py": DETERMINISTIC_SCRIPT,
            "helper.py": "SCALE = 1.0\n",
            ".gitignore": "data/\n",
        },
        spec=text,
    )
    for index in range(3):
        write_csv(root, f"part{index}.csv", [index, index + 1])
    return root


def write_csv(root: Path, name: str, values: list[float]) -> None:
    path = root / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))


def cli(root: Path, monkeypatch: object, *args: str) -> Result:
    """Run `watchkeeper ARGS` in-process with `root` as the working folder."""
    monkeypatch.chdir(root)  # type: ignore[attr-defined]
    return CliRunner().invoke(main, list(args), catch_exceptions=False)
