"""Params reach the train command (placeholders, WK_PARAM_<NAME>, a params file) or are refused."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.ledger.queries import versions
from tests.agent.runs.gitrepo import PYTHON, git, make_repo

PROBE = textwrap.dedent(
    """\
    import json, os, pathlib, sys
    seen = {
        "argv": sys.argv[1:],
        "env": {k: v for k, v in os.environ.items() if k.startswith("WK_PARAM_")},
        "file": pathlib.Path("conf/params.yaml").read_text(),
    }
    pathlib.Path("seen.json").write_text(json.dumps(seen))
    json.dump({"lr_seen": float(sys.argv[1])}, open("metrics.json", "w"))
    """
)

PROBE_SPEC = textwrap.dedent(
    f"""\
    # the churn model
    [models.churn]
    train = "{PYTHON} probe.py {{lr}} {{name}}"  # placeholders
    deps = ["probe.py"]
    outs = ["seen.json"]
    metrics = "metrics.json"
    params = {{ lr = 0.5, epochs = 200, name = "base", fast = false, layers = [1, 2] }}
    params_file = "conf/params.yaml"
    """
)


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(root)
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def recorded(model: str = "churn") -> list[dict]:
    db = open_ledger()
    try:
        return versions(db, model=model)
    finally:
        db.close()


def seen_by_run(home: Path, version: dict) -> dict:
    store = ArtifactStore(home / "artifacts")
    return json.loads(store.path(version["artifacts"]["seen.json"]).read_text())


def test_params_reach_the_command_in_all_three_ways_and_the_ledger_records_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchkeeper_home: Path
) -> None:
    root = make_repo(
        tmp_path,
        files={"probe.py": PROBE, "conf/params.yaml": "lr: 99  # committed, replaced in runs\n"},
        spec=PROBE_SPEC,
    )
    result = cli(
        root,
        monkeypatch,
        "train",
        "churn",
        "--param",
        "lr=5.0",
        "--param",
        "epochs=3",
        "--param",
        "name=it's a; b",
        "--param",
        "fast=yes",
        "--param",
        "layers=4,8",
    )
    assert result.exit_code == 0, result.output
    [version] = recorded()
    expected = {"lr": 5.0, "epochs": 3, "name": "it's a; b", "fast": True, "layers": [4, 8]}
    assert version["params"] == expected
    assert version["experiment"] == 1
    seen = seen_by_run(watchkeeper_home, version)
    assert seen["argv"] == ["5.0", "it's a; b"]  # shell-quoted: one argument each, no injection
    assert seen["env"] == {
        "WK_PARAM_LR": "5.0",
        "WK_PARAM_EPOCHS": "3",
        "WK_PARAM_NAME": "it's a; b",
        "WK_PARAM_FAST": "true",
        "WK_PARAM_LAYERS": "[4, 8]",
    }
    assert seen["file"].splitlines() == [
        "lr: 5.0",
        "epochs: 3",
        'name: "it\'s a; b"',
        "fast: true",
        "layers: [4, 8]",
    ]
    assert version["metrics"] == {"lr_seen": 5.0}
    # the repo's own working tree is untouched
    assert (root / "conf/params.yaml").read_text().startswith("lr: 99")
    assert git(root, "status", "--porcelain") == ""


def test_declared_params_are_delivered_too_and_make_no_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchkeeper_home: Path
) -> None:
    spec = PROBE_SPEC.replace('params_file = "conf/params.yaml"', 'params_file = "conf/p.toml"')
    probe = PROBE.replace("conf/params.yaml", "conf/p.toml")
    root = make_repo(tmp_path, files={"probe.py": probe}, spec=spec)
    result = cli(root, monkeypatch, "train", "churn", "--param", "lr=0.5")
    assert result.exit_code == 0, result.output
    [version] = recorded()
    assert version["experiment"] == 0
    import tomllib

    seen = seen_by_run(watchkeeper_home, version)
    assert tomllib.loads(seen["file"]) == version["params"]
    assert seen["argv"] == ["0.5", "base"]


@pytest.mark.parametrize(
    ("pair", "wanted"),
    [
        (
            "lr=abc",
            "--param lr=abc: lr is declared as a float (0.5 in {spec}:7); 'abc' is not a float",
        ),
        ("epochs=2.5", "epochs is declared as an int (200 in {spec}:7); '2.5' is not an int"),
        ("fast=maybe", "fast is declared as a bool"),
        ('layers=[1, "x"]', "layers is declared as a list"),
        ("lrr=0.1", "declares no param 'lrr'"),
    ],
)
def test_a_value_that_does_not_parse_or_an_unknown_param_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watchkeeper_home: Path, pair: str, wanted: str
) -> None:
    root = make_repo(tmp_path, files={"probe.py": PROBE}, spec=PROBE_SPEC)
    result = cli(root, monkeypatch, "train", "churn", "--param", pair)
    assert result.exit_code == 2
    assert wanted.format(spec=root / "watchkeeper.toml") in result.output
    assert "Traceback" not in result.output
    assert recorded() == []
    runs = watchkeeper_home / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_a_param_the_command_would_not_receive_is_refused_saying_how_to_declare_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = textwrap.dedent(
        f"""\
        [models.churn]
        train = "{PYTHON} train.py --lr 0.1 --epochs 200"
        deps = ["train.py"]
        params = {{ lr = 0.1, epochs = 200 }}
        """
    )
    root = make_repo(tmp_path, spec=spec)
    result = cli(root, monkeypatch, "train", "churn", "--param", "lr=5.0")
    assert result.exit_code == 2
    assert "--param lr: the train command of 'churn' would not receive it" in result.output
    assert "put {lr} in `train`" in result.output and "params_file" in result.output
    assert "$WK_PARAM_LR" in result.output
    assert recorded() == []


def test_a_placeholder_without_a_declared_param_is_refused_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = PROBE_SPEC.replace("{name}", "{nme} '{{literal}}' ${HOME}")
    root = make_repo(tmp_path, files={"probe.py": PROBE}, spec=spec)
    result = cli(root, monkeypatch, "train", "churn")
    assert result.exit_code == 2
    assert (
        f"{root / 'watchkeeper.toml'}:3: [models.churn] train has the placeholder {{nme}} but "
        "declares no param 'nme'" in result.output
    )
    assert "did you mean 'name'?" in result.output


@pytest.mark.parametrize("path", ["../params.json", "/etc/params.json", "conf/../../p.yaml"])
def test_a_params_file_outside_the_repo_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    spec = PROBE_SPEC.replace('"conf/params.yaml"', json.dumps(path))
    root = make_repo(tmp_path, files={"probe.py": PROBE}, spec=spec)
    result = cli(root, monkeypatch, "train", "churn")
    assert result.exit_code == 2
    assert f"{root / 'watchkeeper.toml'}:8: [models.churn] params_file holds" in result.output
    assert "which leaves the repo" in result.output
    assert not (tmp_path / "params.json").exists()


def test_a_params_file_is_not_written_through_a_symlinked_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = make_repo(tmp_path, files={"probe.py": PROBE}, spec=PROBE_SPEC)
    (root / "conf").symlink_to(outside)
    git(root, "add", "conf")
    git(root, "commit", "-qm", "conf is a link")
    result = cli(root, monkeypatch, "train", "churn", "--param", "lr=1")
    assert result.exit_code != 0
    assert "symlink leading out of the repo" in result.output
    assert list(outside.iterdir()) == []
