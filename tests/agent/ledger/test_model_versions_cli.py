"""Experiments, the current version, aliases, tags, notes, comparison and export, via the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.staleness import registered_roots, scan_repos
from agent.verdicts import record_scans, stored_verdicts
from tests.agent.runs.gitrepo import PYTHON, cli_command, cli_env, make_repo
from tests.support import wait_for

COMMENTED_SPEC = textwrap.dedent(
    f"""\
    # churn: who leaves
    [models.churn]
    train = "{PYTHON} train.py"
    deps = ["train.py", "src/"]
    outs = ["model.pkl"]
    metrics = "metrics.json"
    params = {{ lr = 0.01, epochs = 5 }}  # tuned in March
    params_env = true  # train.py reads $WK_PARAMS
    """
)


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(root)
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ok(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    result = cli(root, monkeypatch, *args)
    assert result.exit_code == 0, result.output
    return result


def as_json(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict | list:
    return json.loads(ok(root, monkeypatch, *args, "--json").stdout)


def status_entry(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    report = json.loads(cli(root, monkeypatch, "status", "--json").stdout)
    [repo] = report["repos"]
    [entry] = repo["models"]
    return entry


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_repo(tmp_path, spec=COMMENTED_SPEC)
    ok(root, monkeypatch, "init")
    ok(root, monkeypatch, "train", "churn")  # v1: the declared params
    return root


def test_an_experiment_leaves_the_model_fresh_in_every_view_until_promoted(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(repo, monkeypatch, "train", "churn", "--param", "lr=0.1")  # v2: an experiment
    entry = status_entry(repo, monkeypatch)
    assert (entry["state"], entry["version"]) == ("fresh", 1)
    [newest] = as_json(repo, monkeypatch, "models", "list")
    assert newest["version"] == 2 and newest["experiment"] is True
    assert newest["model_state"] == "fresh"
    assert newest["state"] == "fresh"  # an experiment's params are not held against it
    db = open_ledger()
    try:
        record_scans(db, scan_repos(db, registered_roots(db)), complete=True)
        [verdict] = stored_verdicts(db)
        v1_id = db.execute("SELECT id FROM model_versions WHERE version = 1").fetchone()[0]
    finally:
        db.close()
    assert (verdict["verdict"], verdict["version"], verdict["version_id"]) == ("fresh", 1, v1_id)

    promoted = ok(repo, monkeypatch, "models", "promote", "churn@2")
    assert "churn v2 is now the current version" in promoted.output
    assert "--write-params" in promoted.output
    entry = status_entry(repo, monkeypatch)
    assert (entry["state"], entry["version"]) == ("stale", 2)
    assert entry["stale_reasons"] == ["params changed: lr 0.1 → 0.01"]
    [newest] = as_json(repo, monkeypatch, "models", "list")
    assert newest["model_state"] == "stale"

    ok(repo, monkeypatch, "models", "promote", "churn@2", "--write-params")
    text = (repo / "watchkeeper.toml").read_text()
    assert "params = { lr = 0.1, epochs = 5 }  # tuned in March" in text
    assert "# churn: who leaves" in text and "params_env = true  # train.py reads" in text
    entry = status_entry(repo, monkeypatch)
    assert (entry["state"], entry["version"]) == ("fresh", 2)

    ok(repo, monkeypatch, "train", "churn")  # v3: the declared params again, now lr = 0.1
    assert status_entry(repo, monkeypatch)["version"] == 3
    shown = as_json(repo, monkeypatch, "models", "show", "churn@current")
    assert shown["version"] == 3 and shown["current"] is True and shown["experiment"] is False


def test_promoting_an_older_version_then_training_again_moves_current_forward(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(repo, monkeypatch, "train", "churn")  # v2
    ok(repo, monkeypatch, "models", "promote", "churn@1")
    assert status_entry(repo, monkeypatch)["version"] == 1
    ok(repo, monkeypatch, "train", "churn", "--param", "epochs=9")  # an experiment: no change
    assert status_entry(repo, monkeypatch)["version"] == 1
    ok(repo, monkeypatch, "train", "churn")  # v4, declared params: the current version now
    assert status_entry(repo, monkeypatch)["version"] == 4


def test_only_experiments_is_never_trained_with_a_hint_to_promote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path, spec=COMMENTED_SPEC)
    ok(root, monkeypatch, "init")
    ok(root, monkeypatch, "train", "churn", "--param", "lr=0.2")
    entry = status_entry(root, monkeypatch)
    assert entry["state"] == "never trained"
    assert "models promote churn@1" in entry["reasons"][0]["message"]
    refused = cli(root, monkeypatch, "models", "show", "churn@current")
    assert refused.exit_code == 2 and "no current version yet" in refused.output


def test_aliases_move_and_keep_their_history_and_name_versions_everywhere(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(repo, monkeypatch, "train", "churn", "--param", "lr=0.2")  # v2
    assert (
        "churn@champion -> v1"
        in ok(repo, monkeypatch, "models", "alias", "churn@1", "champion").output
    )
    moved = ok(repo, monkeypatch, "models", "alias", "churn@latest", "champion")
    assert "churn@champion -> v2 (moved from v1)" in moved.output
    assert as_json(repo, monkeypatch, "models", "show", "churn@champion")["version"] == 2
    history = as_json(repo, monkeypatch, "models", "aliases", "churn")
    assert [(h["alias"], h["version"], h["moved_at"] is None) for h in history] == [
        ("champion", 2, True),
        ("champion", 1, False),
    ]
    table = ok(repo, monkeypatch, "models", "aliases", "churn").output
    assert "champion" in table and "v1" in table and "now" in table
    diff = as_json(repo, monkeypatch, "models", "diff", "churn@1", "churn@champion")
    assert diff["params"] == {"lr": [0.01, 0.2]}
    run_id = as_json(repo, monkeypatch, "models", "show", "churn@2")["run_id"]
    for reference in (run_id, run_id[:-3], run_id[-6:]):
        assert as_json(repo, monkeypatch, "models", "show", reference)["version"] == 2
    logs = ok(repo, monkeypatch, "runs", "logs", "churn@champion").output
    assert '"lr": 0.2' in logs
    assert '"lr": 0.2' in ok(repo, monkeypatch, "runs", "logs", run_id[-6:]).output
    removed = ok(repo, monkeypatch, "models", "alias", "churn", "champion", "--remove")
    assert "it named v2" in removed.output
    gone = cli(repo, monkeypatch, "models", "show", "churn@champion")
    assert gone.exit_code == 2 and "has no alias 'champion'" in gone.output
    assert len(as_json(repo, monkeypatch, "models", "aliases", "churn")) == 2


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (("alias", "churn@9", "best"), "model 'churn' has no version 9; its versions are 1"),
        (("alias", "churn@nosuch", "best"), "model 'churn' has no alias 'nosuch'"),
        (("alias", "churn@1", "4"), "alias '4' is a version number"),
        (("alias", "churn@1", "latest"), "alias 'latest' is reserved"),
        (("tag", "churn@1", "dataset"), "tag 'dataset': write it as key=value"),
        (("tag", "churn@1", "=v2"), "write it as key=value"),
        (("note", "churn@1", "  "), "the note is empty"),
        (("promote", "nosuch@1"), "no model named 'nosuch'"),
    ],
)
def test_bad_names_tags_and_notes_are_refused_and_change_nothing(
    repo: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], wanted: str
) -> None:
    result = cli(repo, monkeypatch, "models", *args)
    assert result.exit_code == 2, result.output
    assert wanted in result.output and "Traceback" not in result.output
    shown = as_json(repo, monkeypatch, "models", "show", "churn@1")
    assert (shown["aliases"], shown["tags"], shown["notes"]) == ([], {}, [])


def test_tags_and_notes_are_shown(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok(repo, monkeypatch, "models", "tag", "churn@1", "dataset=v2", "owner=ana=b")
    ok(repo, monkeypatch, "models", "tag", "churn@1", "dataset=v3", "--remove", "owner")
    ok(repo, monkeypatch, "models", "note", "churn@1", "baseline for Q3")
    shown = as_json(repo, monkeypatch, "models", "show", "churn@1")
    assert shown["tags"] == {"dataset": "v3"}
    assert [note["text"] for note in shown["notes"]] == ["baseline for Q3"]
    text = ok(repo, monkeypatch, "models", "show", "churn@1").output
    assert 'dataset = "v3"' in text and "baseline for Q3" in text


def test_compare_puts_params_and_metrics_side_by_side_in_text_json_and_csv(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(repo, monkeypatch, "train", "churn", "--param", "lr=0.3")  # v2, loss 0.6
    ok(repo, monkeypatch, "train", "churn", "--param", "lr=0.2")  # v3, loss 0.4
    ok(repo, monkeypatch, "models", "alias", "churn@1", "champion")
    report = as_json(
        repo, monkeypatch, "models", "compare", "churn", "--last", "3", "--sort", "loss"
    )
    assert report["params"] == ["epochs", "lr"] and report["metrics"] == ["auc", "loss"]
    assert report["differing_params"] == ["lr"]
    assert [entry["version"] for entry in report["versions"]] == [1, 3, 2]
    first = report["versions"][0]
    assert first["current"] and not first["experiment"] and first["aliases"] == ["champion"]
    named = as_json(repo, monkeypatch, "models", "compare", "churn@champion", "churn@2")
    assert [entry["version"] for entry in named["versions"]] == [1, 2]
    rows = list(
        csv.DictReader(
            io.StringIO(
                ok(repo, monkeypatch, "models", "compare", "churn", "--last", "2", "--csv").stdout
            )
        )
    )
    assert [(row["version"], row["param:lr"], row["metric:loss"]) for row in rows] == [
        ("3", "0.2", "0.4"),
        ("2", "0.3", "0.6"),
    ]
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    text = ok(repo, monkeypatch, "models", "compare", "churn", "--last", "3").stdout
    assert "\x1b[1mlr" in text and "\x1b[1m0.2" in text  # the differing param is bold
    assert "\x1b[1mepochs" not in text and "\x1b[1m5" not in text
    bad = cli(repo, monkeypatch, "models", "compare", "churn", "--last", "2", "--sort", "acc")
    assert bad.exit_code == 2 and "no metric or param named 'acc'" in bad.output


def test_get_copies_checked_artifacts_and_refuses_to_overwrite_without_force(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, watchkeeper_home: Path
) -> None:
    out = tmp_path / "export"
    got = ok(repo, monkeypatch, "models", "get", "churn@1", "-o", str(out))
    assert (out / "model.pkl").read_text() == "weights lr=0.01"
    assert str(out / "model.pkl") in got.stdout
    (out / "model.pkl").write_text("my edits")
    refused = cli(repo, monkeypatch, "models", "get", "churn@1", "model.pkl", "-o", str(out))
    assert refused.exit_code == 2
    assert f"{out / 'model.pkl'} already exists; pass --force" in refused.output
    assert (out / "model.pkl").read_text() == "my edits"
    ok(repo, monkeypatch, "models", "get", "churn@1", "-o", str(out), "--force")
    assert (out / "model.pkl").read_text() == "weights lr=0.01"
    ok(repo, monkeypatch, "models", "get", "churn")  # into the working tree (the cwd)
    assert (repo / "model.pkl").read_text() == "weights lr=0.01"
    unknown = cli(repo, monkeypatch, "models", "get", "churn@1", "weights.bin", "-o", str(out))
    assert unknown.exit_code == 2 and "has no artifact 'weights.bin'" in unknown.output


def test_get_refuses_an_artifact_damaged_in_the_store(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, watchkeeper_home: Path
) -> None:
    digest = as_json(repo, monkeypatch, "models", "show", "churn@1")["artifacts"]["model.pkl"]
    stored = ArtifactStore(watchkeeper_home / "artifacts").path(digest)
    stored.chmod(0o600)
    stored.write_text("weights lr=0.02")  # bit rot, same size
    out = tmp_path / "export"
    result = cli(repo, monkeypatch, "models", "get", "churn@1", "-o", str(out))
    assert result.exit_code == 2
    assert "artifact model.pkl is damaged in the store" in result.output
    assert not out.exists() or list(out.iterdir()) == []


WAITING = textwrap.dedent(
    """\
    import json, os, pathlib, time
    print("started", flush=True)
    release = pathlib.Path(os.environ["WK_TEST_RELEASE"])
    deadline = time.time() + 60
    while not release.exists() and time.time() < deadline:
        time.sleep(0.02)
    pathlib.Path("model.pkl").write_text("weights lr=%s" % os.environ["WK_PARAM_LR"])
    json.dump({"auc": 0.5}, open("metrics.json", "w"))
    """
)


def test_training_a_model_twice_at_once_is_refused_naming_the_running_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = COMMENTED_SPEC.replace("train.py", "wait.py")
    root = make_repo(tmp_path, files={"wait.py": WAITING}, spec=spec)
    release = tmp_path / "release"
    monkeypatch.setenv("WK_TEST_RELEASE", str(release))
    first = subprocess.Popen(
        cli_command("train", "churn"),
        cwd=root,
        env={**cli_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def running_run() -> str | None:
            if not (Path(os.environ["WATCHKEEPER_HOME"]) / "ledger.db").exists():
                return None
            db = open_ledger()
            try:
                row = db.execute("SELECT id FROM runs WHERE state = 'running'").fetchone()
            finally:
                db.close()
            return row[0] if row else None

        wait_for(lambda: running_run() is not None, 30, "the first run to be running")
        run_id = running_run()
        second = cli(root, monkeypatch, "train", "churn", "--param", "lr=0.5")
        assert second.exit_code == 2
        assert f"churn is already training: run {run_id} is running" in second.output
        assert "--allow-concurrent" in second.output
        allowed = subprocess.Popen(
            cli_command("train", "churn", "--allow-concurrent", "--param", "lr=0.5"),
            cwd=root,
            env={**cli_env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: len(_run_states()) == 2, 30, "the concurrent run to be recorded")
        release.write_text("go")
        assert allowed.wait(60) == 0, allowed.stderr.read() if allowed.stderr else ""
        assert first.wait(60) == 0
    finally:
        release.touch()
        first.wait(60)
    assert sorted(_run_states()) == ["succeeded", "succeeded"]


def _run_states() -> list[str]:
    db = open_ledger()
    try:
        return [row[0] for row in db.execute("SELECT state FROM runs").fetchall()]
    finally:
        db.close()
