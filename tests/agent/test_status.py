"""`watchkeeper status`, `models` and `runs`: staleness with every reason, and stable JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.ledger import open_ledger
from agent.ledger.queries import versions
from agent.staleness import StalenessChecker, params_reason
from tests.agent.runs.gitrepo import PYTHON, SPEC, commit_all, git, make_repo


def cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(root)
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def status_json(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
    result = cli(root, monkeypatch, "status", "--json")
    return result.exit_code, json.loads(result.stdout)


def model_entry(report: dict, name: str = "churn") -> dict:
    [repo] = report["repos"]
    return next(entry for entry in repo["models"] if entry["model"] == name)


@pytest.fixture
def trained_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_repo(tmp_path)
    assert cli(root, monkeypatch, "init").exit_code == 0
    result = cli(root, monkeypatch, "train", "churn")
    assert result.exit_code == 0, result.output
    return root


def test_init_writes_a_template_and_registers_the_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    result = CliRunner().invoke(main, ["init", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "watchkeeper.toml").read_text().startswith("# Watchkeeper project file")
    assert [row["path"] for row in open_ledger()["repos"].rows] == [str(root.resolve())]
    code, report = status_json(root, monkeypatch)
    # Nothing declared yet: status checked nothing, so it does not say "all fresh".
    assert code == 2 and report["repos"][0]["models"] == []
    result = cli(root, monkeypatch, "status")
    assert result.exit_code == 2 and "no repo declares models" in result.stderr


def test_init_outside_a_git_repo_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 2 and "not inside a git repository" in result.output


def test_a_just_trained_model_is_fresh(trained_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, report = status_json(trained_repo, monkeypatch)
    assert code == 0
    entry = model_entry(report)
    assert entry["state"] == "fresh" and entry["stale"] is False and entry["version"] == 1
    assert entry["reasons"] == [] and report["fresh"] == 1 and report["stale"] == 0
    text = cli(trained_repo, monkeypatch, "status")
    assert text.exit_code == 0 and "fresh churn v1" in text.output


def test_an_uncommitted_code_change_makes_it_stale_naming_the_file(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_repo / "src" / "helper.py").write_text('MESSAGE = "changed"\n')
    code, report = status_json(trained_repo, monkeypatch)
    assert code == 1
    [reason] = model_entry(report)["reasons"]
    assert reason["kind"] == "code" and reason["paths"] == ["src/helper.py"]
    assert "(uncommitted)" in reason["message"] and "src/helper.py (modified)" in reason["message"]
    (trained_repo / "src" / "helper.py").write_text('MESSAGE = "committed helper"\n')
    assert status_json(trained_repo, monkeypatch)[0] == 0


def test_a_committed_change_and_a_new_untracked_file_are_named(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_repo / "src" / "helper.py").write_text('MESSAGE = "v2"\n')
    commit_all(trained_repo, "helper v2")
    (trained_repo / "src" / "features.py").write_text("FEATURES = []\n")
    code, report = status_json(trained_repo, monkeypatch)
    assert code == 1
    [reason] = model_entry(report)["reasons"]
    assert "(committed and uncommitted)" in reason["message"]
    assert set(reason["paths"]) == {"src/helper.py", "src/features.py"}
    assert "src/features.py (added)" in reason["message"]


def test_changes_outside_the_deps_do_not_make_it_stale(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_repo / "README.md").write_text("docs\n")
    commit_all(trained_repo, "docs")
    (trained_repo / "notes.txt").write_text("scratch\n")
    assert status_json(trained_repo, monkeypatch)[0] == 0


def test_params_command_and_deps_changes_are_each_a_reason(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = (
        SPEC.replace("lr = 0.01, epochs = 5", "lr = 0.02, batch = 32")
        .replace(f"{PYTHON} train.py", f"{PYTHON} train.py --fast")
        .replace('"src/"]', '"src/", "README.md"]')
    )
    (trained_repo / "README.md").write_text("docs\n")
    (trained_repo / "watchkeeper.toml").write_text(spec)
    code, report = status_json(trained_repo, monkeypatch)
    assert code == 1
    reasons = {reason["kind"]: reason for reason in model_entry(report)["reasons"]}
    assert set(reasons) == {"command", "params", "deps"}
    assert "--fast" in reasons["command"]["message"]
    assert reasons["params"]["message"] == (
        "params changed: batch added (= 32), epochs removed (was 5), lr 0.01 → 0.02"
    )
    assert reasons["deps"]["paths"] == ["README.md"]


def test_a_declared_but_untrained_model_is_never_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path, spec=SPEC + '\n[models.fraud]\ntrain = "true"\n')
    cli(root, monkeypatch, "init")
    code, report = status_json(root, monkeypatch)
    assert code == 1
    assert model_entry(report, "fraud")["state"] == "never trained"
    assert model_entry(report, "fraud")["reasons"][0]["kind"] == "untrained"
    assert model_entry(report, "churn")["version"] is None
    assert report["never_trained"] == 2 and report["stale"] == 0


def test_status_in_an_unregistered_clone_with_an_empty_ledger_checks_its_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ci").mkdir()
    root = make_repo(tmp_path / "ci")  # a fresh CI clone: never `init`, nothing trained
    code, report = status_json(root, monkeypatch)
    assert code == 1 and model_entry(report)["state"] == "never trained"
    text = cli(root, monkeypatch, "status")
    assert text.exit_code == 1 and "never trained churn" in text.stdout


def test_status_of_named_models_and_of_one_repo(
    trained_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_repo / "watchkeeper.toml").write_text(SPEC + '\n[models.fraud]\ntrain = "true"\n')
    result = cli(trained_repo, monkeypatch, "status", "churn", "--json")
    [repo] = json.loads(result.stdout)["repos"]
    assert [m["model"] for m in repo["models"]] == ["churn"]
    unknown = cli(trained_repo, monkeypatch, "status", "chrun")
    assert unknown.exit_code == 2
    assert "no model named chrun is declared; models: churn, fraud" in unknown.stderr
    (tmp_path / "other").mkdir()
    elsewhere = make_repo(tmp_path / "other", spec=SPEC.replace("churn", "ads"))
    result = cli(trained_repo, monkeypatch, "status", "--repo", str(elsewhere), "--json")
    [repo] = json.loads(result.stdout)["repos"]
    assert result.exit_code == 1 and [m["model"] for m in repo["models"]] == ["ads"]
    assert repo["path"] == str(elsewhere.resolve())


def test_a_deleted_spec_in_a_registered_repo_is_an_error_naming_it(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_repo / "watchkeeper.toml").unlink()
    result = cli(trained_repo, monkeypatch, "status")
    assert result.exit_code == 2
    assert f"{trained_repo / 'watchkeeper.toml'} is missing" in result.stdout


def test_a_misspelled_key_is_named_with_its_section_and_line(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = (trained_repo / "watchkeeper.toml").read_text().replace("outs =", "ouds =")
    (trained_repo / "watchkeeper.toml").write_text(spec)
    result = cli(trained_repo, monkeypatch, "status")
    assert result.exit_code == 2
    assert "watchkeeper.toml:4: [models.churn] ouds is not a known key" in result.stdout
    assert "did you mean 'outs'?" in result.stdout


def test_a_dep_that_does_not_exist_is_an_error_beside_the_other_verdicts(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPEC + '\n[models.fraud]\ntrain = "true"\ndeps = ["data/trian.csv"]\n'
    (trained_repo / "watchkeeper.toml").write_text(spec)
    code, report = status_json(trained_repo, monkeypatch)
    assert code == 2
    fraud = model_entry(report, "fraud")
    assert fraud["state"] == "error" and "data/trian.csv does not exist" in fraud["error"]
    assert fraud["reasons"] == []
    assert model_entry(report, "churn")["state"] == "fresh"


def test_a_failed_newest_version_is_failed_in_models_list_and_never_trained_in_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path)
    (root / "train.py").write_text("raise SystemExit(3)\n")
    commit_all(root, "broken")
    assert cli(root, monkeypatch, "train", "churn").exit_code == 3
    [row] = json.loads(cli(root, monkeypatch, "models", "list", "--json").stdout)
    assert (row["state"], row["stale"], row["model_state"]) == ("failed", False, "never trained")
    code, report = status_json(root, monkeypatch)
    entry = model_entry(report)
    assert code == 1 and entry["state"] == "never trained" and entry["latest_status"] == "failed"


def test_a_failed_version_leaves_the_last_good_one_in_charge(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_repo / "train.py").write_text("raise SystemExit(4)\n")
    assert cli(trained_repo, monkeypatch, "train", "churn").exit_code == 4
    code, report = status_json(trained_repo, monkeypatch)
    entry = model_entry(report)
    assert code == 1 and entry["version"] == 1
    assert entry["reasons"][0]["paths"] == ["train.py"]


def test_status_exits_2_when_a_repo_cannot_be_read(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (trained_repo / "watchkeeper.toml").write_text("[models.churn\n")
    result = cli(trained_repo, monkeypatch, "status")
    assert result.exit_code == 2
    assert "watchkeeper.toml:1" in result.output and "invalid TOML" in result.output


def test_models_list_json_has_the_documented_fields(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli(trained_repo, monkeypatch, "models", "list", "--json")
    assert result.exit_code == 0
    [entry] = json.loads(result.output)
    assert {
        "model",
        "version",
        "status",
        "commit",
        "dirty",
        "data",
        "params",
        "metrics",
        "artifacts",
        "stale",
        "stale_reasons",
    } <= set(entry)
    head = git(trained_repo, "rev-parse", "HEAD").strip()
    assert (entry["model"], entry["version"], entry["status"]) == ("churn", 1, "succeeded")
    assert entry["commit"] == head and entry["dirty"] is False
    assert entry["params"] == {"lr": 0.01, "epochs": 5}
    assert entry["metrics"] == {"auc": 0.91, "loss": 0.02}
    assert list(entry["artifacts"]) == ["model.pkl"]
    assert entry["stale"] is False and entry["stale_reasons"] == []
    (trained_repo / "train.py").write_text("# changed\n")
    [stale] = json.loads(cli(trained_repo, monkeypatch, "models", "list", "--json").output)
    assert stale["stale"] is True and "train.py" in stale["stale_reasons"][0]
    table = cli(trained_repo, monkeypatch, "models", "list")
    assert "churn" in table.output and "stale" in table.output


def test_models_show_and_diff(trained_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (trained_repo / "src" / "helper.py").write_text('MESSAGE = "v2"\n')
    commit_all(trained_repo, "helper v2")
    assert cli(trained_repo, monkeypatch, "train", "churn", "--param", "lr=0.1").exit_code == 0
    shown = cli(trained_repo, monkeypatch, "models", "show", "churn@1")
    assert shown.exit_code == 0
    assert "churn v1" in shown.output and "lr = 0.01" in shown.output and "stale" in shown.output
    latest = json.loads(cli(trained_repo, monkeypatch, "models", "show", "churn", "--json").output)
    assert latest["version"] == 2 and latest["params"]["lr"] == 0.1
    diff = json.loads(
        cli(trained_repo, monkeypatch, "models", "diff", "churn@1", "churn@2", "--json").output
    )
    assert diff["params"] == {"lr": [0.01, 0.1]}
    assert diff["metrics"] == {"loss": [0.02, 0.2]}
    assert "src/helper.py" in diff["code"]["stat"] and "1 file changed" in diff["code"]["stat"]
    assert list(diff["code"]["paths"]) == ["src"]
    text = cli(trained_repo, monkeypatch, "models", "diff", "churn@1", "churn@2")
    assert "lr" in text.output and "src/helper.py" in text.output


def test_models_show_errors_name_what_exists(
    trained_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = cli(trained_repo, monkeypatch, "models", "show", "fraud")
    assert unknown.exit_code == 2 and "no model named 'fraud'" in unknown.output
    assert "churn" in unknown.output
    missing = cli(trained_repo, monkeypatch, "models", "show", "churn@9")
    assert missing.exit_code == 2 and "its versions are 1" in missing.output
    no_alias = cli(trained_repo, monkeypatch, "models", "show", "churn@best")
    assert no_alias.exit_code == 2 and "has no alias 'best'" in no_alias.output
    bad = cli(trained_repo, monkeypatch, "models", "show", "churn@1.5")
    assert bad.exit_code == 2 and "after '@' write a version number" in bad.output


def test_runs_list_show_and_logs(trained_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [run] = json.loads(cli(trained_repo, monkeypatch, "runs", "list", "--json").output)
    assert run["state"] == "succeeded" and run["model"] == "churn" and run["version"] == 1
    shown = json.loads(
        cli(trained_repo, monkeypatch, "runs", "show", run["id"][:-2], "--json").output
    )
    assert shown["id"] == run["id"] and shown["exit_code"] == 0
    logs = cli(trained_repo, monkeypatch, "runs", "logs", run["id"])
    assert "training with" in logs.output
    followed = cli(trained_repo, monkeypatch, "runs", "logs", run["id"], "--follow")
    assert followed.output == logs.output
    missing = cli(trained_repo, monkeypatch, "runs", "show", "nope")
    assert missing.exit_code == 2 and run["id"] in missing.output


def test_the_checker_reads_versions_directly(trained_repo: Path) -> None:
    db = open_ledger()
    [version] = versions(db, model="churn")
    assert not StalenessChecker(db).check(version).stale
    git(trained_repo, "rm", "-q", "-r", "src")
    staleness = StalenessChecker(db).check(version)
    assert staleness.messages == ["code dep src no longer exists"]


def test_params_reason_compares_nested_values() -> None:
    assert params_reason({"layers": [1, 2]}, {"layers": [1, 2]}) is None
    reason = params_reason({"layers": [1, 2]}, {"layers": [1, 3]})
    assert reason is not None and reason.message == "params changed: layers [1, 2] → [1, 3]"


def test_registered_repos_without_a_spec_or_folder_are_skipped(
    trained_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    git(watched, "init", "-q")
    gone = tmp_path / "gone"
    db = open_ledger()
    for path in (watched, gone):
        db.execute("INSERT INTO repos (path, name) VALUES (?, ?)", [str(path), path.name])
    code, report = status_json(trained_repo, monkeypatch)
    assert code == 0
    assert [repo["path"] for repo in report["repos"]] == [str(trained_repo)]
    assert {entry["path"]: entry["reason"] for entry in report["skipped"]} == {
        str(watched): "no watchkeeper.toml (watched only)",
        str(gone): "the folder no longer exists",
    }


@pytest.fixture
def refitted_coding_time() -> int:
    """The built-in `coding-time` model, fitted by the agent's refit to saves in the ledger."""
    import time

    from agent.daemon import coding_time_refit
    from agent.daemon.service import AgentService
    from agent.paths import WatchkeeperPaths

    service = AgentService(WatchkeeperPaths.from_environment().ensure())
    day = int(time.time()) // 86400 * 86400 - 5 * 86400
    db = service.db()
    db.conn.executemany(
        "INSERT INTO activity_events (ts, kind) VALUES (?, 'save')",
        [(day + (n // 8) * 86400 + 9 * 3600 + (n % 8) * 600,) for n in range(40)],
    )
    db.conn.commit()
    result = coding_time_refit.refit(service)
    assert result["version"] == 1
    return int(result["model_version_id"])


def test_the_built_in_coding_time_model_is_shown_as_built_in_not_stale(
    trained_repo: Path, refitted_coding_time: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, report = status_json(trained_repo, monkeypatch)
    assert code == 0  # the built-in model does not make status report stale
    assert report["skipped"] == []
    [builtin] = report["builtin"]
    assert (builtin["model"], builtin["state"], builtin["version"]) == (
        "coding-time",
        "built-in",
        1,
    )
    assert builtin["repo"] == "builtin:watchkeeper" and builtin["refitted_at"] > 0
    text = cli(trained_repo, monkeypatch, "status").output
    assert "built-in coding-time v1, last refit" in text
    assert "no longer exists" not in text
    listed = json.loads(cli(trained_repo, monkeypatch, "models", "list", "--json").output)
    entry = next(row for row in listed if row["model"] == "coding-time")
    assert entry["stale"] is False and entry["stale_reasons"] == []
    assert entry["builtin"] is True
    assert next(row for row in listed if row["model"] == "churn")["builtin"] is False
    table = cli(trained_repo, monkeypatch, "models", "list").output
    assert "built-in" in table
