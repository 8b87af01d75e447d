"""`init --from-dvc` against real dvc: translated models train to the outs `dvc repro` makes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.interop.dvc import convert_dvc, dvc_md5_for, spec_text_with
from agent.ledger import open_ledger, write_transaction
from agent.ledger.queries import versions
from agent.project.spec import load_project
from tests.agent.runs.gitrepo import PYTHON, commit_all, git
from tests.agent.share.people import make_remote, person

DVC = str(Path(sys.executable).with_name("dvc"))

PREPARE = textwrap.dedent(
    """\
    import pathlib, yaml
    params = yaml.safe_load(open("params.yaml"))
    rows = pathlib.Path("data/raw.csv").read_text().splitlines()
    pathlib.Path("data/prepared.txt").write_text("\\n".join(rows * params["seed"]) + "\\n")
    """
)

FIT = textwrap.dedent(
    """\
    import json, pathlib, sys, yaml
    params = yaml.safe_load(open("params.yaml"))
    size = int(sys.argv[1])
    rows = pathlib.Path("data/prepared.txt").read_text().splitlines()
    weight = len(rows) * size * params["train"]["scale"]
    pathlib.Path(f"model-{size}.txt").write_text(f"{params['train']['name']} {weight}\\n")
    json.dump({"weight": weight}, open(f"metrics-{size}.json", "w"))
    pathlib.Path(f"curve-{size}.csv").write_text(f"step,weight\\n0,{weight}\\n")
    """
)

PARAMS = "seed: 3\nsizes: [2, 5]\ntrain:\n  scale: 1.5\n  name: 'x: y'\n"

PIPELINE = textwrap.dedent(
    f"""\
    stages:
      prepare:
        cmd: {PYTHON} prepare.py
        deps: [prepare.py, data/raw.csv]
        params: [seed]
        outs: [data/prepared.txt]
      fit:
        foreach: ${{sizes}}
        do:
          cmd: {PYTHON} fit.py ${{item}}
          deps: [fit.py, data/prepared.txt]
          params: [train.scale, train.name]
          outs:
            - model-${{item}}.txt
          metrics:
            - metrics-${{item}}.json:
                cache: false
          plots:
            - curve-${{item}}.csv:
                cache: false
      archived:
        cmd: echo old
        frozen: true
    """
)


def dvc(root: Path, *args: str) -> str:
    completed = subprocess.run(
        [DVC, *args], cwd=root, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    return completed.stdout


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(root)
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def dvc_repo(folder: Path) -> Path:
    """A git + dvc repo: a two-stage pipeline with a foreach, params.yaml and a `dvc add`ed csv."""
    root = write_repo(
        folder / "repo",
        {
            "prepare.py": PREPARE,
            "fit.py": FIT,
            "params.yaml": PARAMS,
            "dvc.yaml": PIPELINE,
            "data/raw.csv": "a,b\n1,2\n3,4\n",
        },
    )
    dvc(root, "init", "-q")
    dvc(root, "config", "core.autostage", "false")
    dvc(root, "add", "-q", "data/raw.csv")
    with (root / "data/.gitignore").open("a") as ignore:
        ignore.write("/prepared.txt\n")  # as `dvc repro` would add it
    (root / ".gitignore").write_text("/model-*.txt\n/metrics-*.json\n/curve-*.csv\n")
    commit_all(root, "pipeline")
    return root


def recorded(model: str) -> list[dict]:
    db = open_ledger()
    try:
        return versions(db, model=model)
    finally:
        db.close()


@pytest.mark.slow
def test_a_converted_pipeline_trains_to_the_outs_of_dvc_repro(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = dvc_repo(tmp_path)
    reproduced = tmp_path / "reproduced"
    shutil.copytree(root, reproduced, symlinks=True)
    dvc(reproduced, "repro", "-q")

    result = cli(root, monkeypatch, "init", "--from-dvc")
    assert result.exit_code == 0, result.output
    assert "dvc.yaml:18: stage fit@2: plots curve-2.csv: not translated as a plot" in result.output
    assert "dvc.yaml:23: stage archived: frozen: not translated" in result.output
    assert "stage fit@5: is model fit-5" in result.output
    project = load_project(root)
    assert sorted(project.models) == ["fit-2", "fit-5", "prepare"]
    assert project.models["fit-5"].params_file == "params.yaml"
    assert project.models["fit-5"].params["train"] == {"scale": 1.5, "name": "x: y"}
    assert project.models["fit-5"].metrics == "metrics-5.json"
    commit_all(root, "watchkeeper.toml from dvc.yaml")

    assert cli(root, monkeypatch, "train", "prepare").exit_code == 0
    got = cli(root, monkeypatch, "models", "get", "prepare", "-o", str(root))
    assert got.exit_code == 0, got.output
    for model in ("fit-2", "fit-5"):
        trained = cli(root, monkeypatch, "train", model)
        assert trained.exit_code == 0, trained.output
        assert cli(root, monkeypatch, "models", "get", model, "-o", str(root)).exit_code == 0

    for out in ("data/prepared.txt", "model-2.txt", "model-5.txt", "curve-5.csv"):
        assert (root / out).read_bytes() == (reproduced / out).read_bytes(), out
    for size in (2, 5):
        dvc_metrics = json.loads((reproduced / f"metrics-{size}.json").read_text())
        assert recorded(f"fit-{size}")[0]["metrics"] == dvc_metrics
    rows, seed, size, scale = 3, 3, 5, 1.5
    assert json.loads((root / "model-5.txt").read_text().split()[-1]) == rows * seed * size * scale

    raw_md5 = hashlib.md5((root / "data/raw.csv").read_bytes()).hexdigest()
    assert f"md5: {raw_md5}" in (root / "data/raw.csv.dvc").read_text()
    prepare_data = recorded("prepare")[0]["data"]["data/raw.csv"]
    assert prepare_data["dvc_md5"] == raw_md5 and prepare_data["fingerprint"]
    shown = cli(root, monkeypatch, "models", "show", "prepare")
    assert f'data/raw.csv = "{raw_md5}"' in shown.output and "dvc md5" in shown.output


def test_md5s_come_from_dvc_lock_and_only_while_the_data_still_matches(
    tmp_path: Path,
) -> None:
    root = write_repo(tmp_path / "repo", {"data/out.txt": "hello\n"})
    md5 = hashlib.md5(b"hello\n").hexdigest()
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  make:\n    cmd: echo\n    outs:\n"
        f"    - path: out.txt\n      md5: {md5}\n      size: 6\n"
    )
    assert dvc_md5_for(root, "data/out.txt") is None  # the stage ran in the repo root
    (root / "dvc.lock").write_text(
        (root / "dvc.lock").read_text().replace("cmd: echo", "cmd: echo\n    wdir: data")
    )
    assert dvc_md5_for(root, "data/out.txt") == md5
    (root / "data/out.txt").write_text("changed\n")
    assert dvc_md5_for(root, "data/out.txt") is None


def test_a_dvc_yaml_syntax_error_names_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_repo(
        tmp_path / "repo",
        {"dvc.yaml": "stages:\n  train:\n    cmd: python t.py\n    outs: [a, b\n  other: 1\n"},
    )
    result = cli(root, monkeypatch, "init", "--from-dvc")
    assert result.exit_code == 2
    assert f"{root / 'dvc.yaml'}:5: invalid YAML" in result.output
    assert not (root / "watchkeeper.toml").exists()


def test_a_stage_name_that_is_no_model_name_is_renamed_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_repo(
        tmp_path / "repo",
        {"dvc.yaml": "stages:\n  _train model:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n"},
    )
    result = cli(root, monkeypatch, "init", "--from-dvc")
    assert result.exit_code == 0, result.output
    assert "dvc.yaml:2: stage _train model: is model train-model" in result.output
    assert list(load_project(root).models) == ["train-model"]
    assert "# from dvc.yaml:2 stage _train model" in (root / "watchkeeper.toml").read_text()


def test_foreach_over_a_missing_params_key_is_refused_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_repo(
        tmp_path / "repo",
        {
            "params.yaml": "sizes: [1, 2]\n",
            "dvc.yaml": "stages:\n  fit:\n    foreach: ${size}\n    do:\n      cmd: echo ${item}\n",
        },
    )
    result = cli(root, monkeypatch, "init", "--from-dvc")
    assert result.exit_code == 2
    assert "dvc.yaml:3: stage fit: foreach names ${size}, which params.yaml" in result.output
    assert not (root / "watchkeeper.toml").exists()


def test_without_dvc_yaml_init_from_dvc_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_repo(tmp_path / "repo", {"train.py": ""})
    result = cli(root, monkeypatch, "init", "--from-dvc")
    assert result.exit_code == 2
    assert "dvc.yaml does not exist" in result.output
    assert not (root / "watchkeeper.toml").exists()


def test_matrix_and_params_in_commands_and_an_existing_spec(tmp_path: Path) -> None:
    root = write_repo(
        tmp_path / "repo",
        {
            "params.yaml": "lr: 0.1\nextra: null\n",
            "dvc.yaml": textwrap.dedent(
                """\
                stages:
                  sweep:
                    matrix:
                      opt: [sgd, adam]
                      depth: [2]
                    wdir: src
                    cmd: python t.py --opt ${item.opt} --depth ${item.depth} --lr ${lr}
                    outs:
                      - m-${item.opt}.bin
                      - s3://bucket/far.bin
                """
            ),
        },
    )
    conversion = convert_dvc(root)
    assert sorted(conversion.models) == ["sweep-adam-2", "sweep-sgd-2"]
    model = conversion.models["sweep-adam-2"]
    assert model["train"] == "cd src && python t.py --opt adam --depth 2 --lr {lr}"
    assert model["outs"] == ["src/m-adam.bin"]
    assert model["params"] == {"lr": 0.1}
    assert any("s3://bucket/far.bin: not on this disk" in note for note in conversion.notes)
    assert any("param extra (null" in note for note in conversion.notes)

    existing = '[models.sweep-sgd-2]  # tuned by hand\ntrain = "python mine.py"\n'
    text = spec_text_with(root, existing, conversion)
    assert text.startswith(existing)
    assert "[models.sweep-adam-2]" in text and "mine.py" in text
    assert "watchkeeper.toml: model sweep-sgd-2 is already declared there" in conversion.notes[-1]


def test_a_folder_tracked_by_dvc_add_keeps_its_md5_while_its_files_match(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo", {"images/a.txt": "a\n", "images/sub/b.txt": "b\n"})
    dvc(root, "init", "-q")
    dvc(root, "add", "-q", "images")
    recorded_md5 = next(
        line.split()[-1]
        for line in (root / "images.dvc").read_text().splitlines()
        if line.strip().startswith("- md5:")
    )
    assert recorded_md5.endswith(".dir")
    assert dvc_md5_for(root, "images") == recorded_md5
    (root / "images/sub/c.txt").write_text("new\n")
    assert dvc_md5_for(root, "images") is None
    (root / "images/sub/c.txt").unlink()
    (root / "images/a.txt").write_text("changed\n")
    assert dvc_md5_for(root, "images") is None


def test_the_dvc_md5_of_a_version_travels_to_a_teammate(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    [global_id] = ada.add_versions(1)
    db = ada.ledger()
    try:
        with write_transaction(db):
            db.execute(
                "UPDATE model_versions SET data = ? WHERE global_id = ?",
                [
                    json.dumps({"data/raw.csv": {"fingerprint": "f" * 64, "dvc_md5": "a" * 32}}),
                    global_id,
                ],
            )
    finally:
        db.close()
    ada.ok("push", "churn")
    bob = person(tmp_path, "Bob", remote)
    bob.ok("pull")
    shown = bob.json("models", "show", global_id)
    assert shown["dvc_md5"] == {"data/raw.csv": "a" * 32}
    assert shown["data"] == {"data/raw.csv": "f" * 64}
