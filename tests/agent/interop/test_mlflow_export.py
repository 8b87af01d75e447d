"""`watchkeeper export mlflow` against a real MLflow tracking server, with real faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.interop.mlflow_support import FaultyProxy, MlflowServer, add_versions
from tests.agent.interop.test_mlflow_capture import MLFLOW_TRAIN, spec, step_times
from tests.agent.runs.gitrepo import cli_command, cli_env, make_repo, run_cli
from tests.support import wait_for

mlflow = pytest.importorskip("mlflow")

FAST_RETRIES = ["--retries", "3"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = MlflowServer(tmp_path_factory.mktemp("mlflow-export-server")).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def model() -> str:
    """A model name of this test alone (registered model names are global on the server)."""
    return f"m{uuid.uuid4().hex[:8]}"


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def server_runs(uri: str, experiment: str) -> list[Any]:
    found = client(uri).get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client(uri).search_runs([found.experiment_id], max_results=1000))


def global_ids_on_server(uri: str, experiment: str) -> Counter[str]:
    return Counter(run.data.tags["watchkeeper.global_id"] for run in server_runs(uri, experiment))


def export(root: Path, uri: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        cli_command("export", "mlflow", "--tracking-uri", uri, *args),
        cwd=root,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.timeout(300)
def test_versions_become_runs_registered_versions_and_aliases_once(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 3, points=7)
    assert run_cli(root, "models", "alias", f"{model}@2", "champion").returncode == 0

    first = export(root, server.uri)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"3 runs exported to {server.uri}, 0 already there; 1 alias(es) set or moved"
    )

    mlflow_client = client(server.uri)
    runs = {run.data.tags["watchkeeper.global_id"]: run for run in server_runs(server.uri, model)}
    assert sorted(runs) == sorted(ids)
    second = runs[ids[1]]
    assert second.info.run_name == f"{model}-v2"
    assert second.info.status == "FINISHED"
    assert second.data.params == {"lr": "0.02", "epochs": "5"}
    assert second.data.metrics["auc"] == pytest.approx(0.501)
    tags = second.data.tags
    assert tags["watchkeeper.git_commit"] == "a" * 40
    assert tags["watchkeeper.diff"] == "blake3:" + "d" * 64
    assert tags["watchkeeper.data.data/train.csv"] == "fp1"
    assert (tags["watchkeeper.executor"], tags["watchkeeper.host"]) == ("local", "box")
    history = mlflow_client.get_metric_history(second.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [
        (step, pytest.approx(1.0 / (step + 1))) for step in range(7)
    ]
    downloaded = mlflow_client.download_artifacts(second.info.run_id, "model", str(tmp_path))
    assert Path(downloaded, "weights.bin").read_text() == f"weights of {model} 2"

    versions = mlflow_client.search_model_versions(f"name = '{model}'")
    by_run = {v.run_id: v.version for v in versions}
    assert [by_run[runs[g].info.run_id] for g in ids] == ["1", "2", "3"]
    champion = mlflow_client.get_model_version_by_alias(model, "champion")
    assert champion.run_id == second.info.run_id

    again = export(root, server.uri)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"0 runs exported to {server.uri}, 3 already there"
    assert global_ids_on_server(server.uri, model) == Counter(ids)

    assert run_cli(root, "models", "alias", f"{model}@3", "champion").returncode == 0
    moved = export(root, server.uri)
    assert "1 alias(es) set or moved" in moved.stdout
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == "3"


@pytest.mark.timeout(300)
def test_points_captured_from_mlflow_go_out_at_the_times_they_were_logged(
    server: MlflowServer, tmp_path: Path
) -> None:
    root = make_repo(tmp_path, files={"train.py": MLFLOW_TRAIN}, spec=spec())
    trained = run_cli(root, "train", "churn", timeout=180)
    assert trained.returncode == 0, trained.stderr
    run_id = run_cli(root, "runs", "list", "--json")
    assert run_id.returncode == 0, run_id.stderr
    (ledger_run,) = [r["id"] for r in json.loads(run_id.stdout)]
    experiment = f"e{uuid.uuid4().hex[:8]}"
    exported = export(root, server.uri, "--experiment", experiment, "churn")
    assert exported.returncode == 0, exported.stderr
    (run,) = server_runs(server.uri, experiment)
    history = client(server.uri).get_metric_history(run.info.run_id, "loss")
    logged = [round(seconds * 1000) for seconds in step_times(ledger_run, "loss")]
    assert len(logged) == 50
    assert [(m.step, m.timestamp) for m in history] == list(enumerate(logged))


@pytest.mark.timeout(300)
def test_references_since_and_a_named_experiment(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 3, points=0)
    experiment = f"team-{model}"
    one = export(root, server.uri, "--experiment", experiment, f"{model}@2")
    assert one.returncode == 0, one.stderr
    assert global_ids_on_server(server.uri, experiment) == Counter([ids[1]])
    later = export(root, server.uri, "--experiment", experiment, "--since", "2999-01-01", model)
    assert later.stdout.startswith("0 runs exported")
    rest = export(root, server.uri, "--experiment", experiment, model)
    assert rest.stdout.startswith(f"2 runs exported to {server.uri}, 1 already there")
    assert global_ids_on_server(server.uri, experiment) == Counter(ids)


@pytest.mark.timeout(300)
def test_a_missing_experiment_is_refused_with_no_create(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    add_versions(home, root, model, 1, points=0)
    refused = export(root, server.uri, "--no-create", "--experiment", f"absent-{model}")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: --experiment 'absent-{model}': no such experiment at {server.uri}; create it "
        "there, or leave out --no-create to have it created"
    ]
    assert client(server.uri).get_experiment_by_name(f"absent-{model}") is None


@pytest.mark.timeout(300)
def test_500s_mid_export_are_retried_and_duplicate_nothing(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 12, points=3)
    # The first run and model version made, and every fifth request, fail after the server did
    # the work: a run or model version the server made but whose answer was lost must not be
    # made twice. A path that failed is not failed again at once: with four workers, one
    # request's retries could otherwise all land on multiples of five and use up its tries.
    just_failed: set[str] = set()
    firsts = {"/runs/create", "/model-versions/create"}

    def firsts_and_every_fifth_never_twice_in_a_row(number: int, path: str) -> bool:
        first = next((each for each in firsts if path.endswith(each)), None)
        failing = (number % 5 == 0 or first is not None) and path not in just_failed
        (just_failed.add if failing else just_failed.discard)(path)
        if failing and first is not None:
            firsts.discard(first)
        return failing

    proxy = FaultyProxy(server.port, fails=firsts_and_every_fifth_never_twice_in_a_row)
    proxy.after_forwarding = True
    try:
        done = export(root, proxy.uri, "--retries", "5")
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert any("runs/create" in path for path in proxy.failed), proxy.failed
    assert any("model-versions/create" in path for path in proxy.failed), proxy.failed
    assert done.stdout.startswith(f"12 runs exported to {proxy.uri}")
    assert global_ids_on_server(server.uri, model) == Counter(ids)
    versions = client(server.uri).search_model_versions(f"name = '{model}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, 13))


@pytest.mark.timeout(300)
def test_a_server_that_goes_down_stops_the_export_in_one_line_and_it_resumes(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 10, points=3)
    down_from = 40
    proxy = FaultyProxy(server.port, fails=lambda number, path: number >= down_from)
    try:
        stopped = export(root, proxy.uri, *FAST_RETRIES)
        assert stopped.returncode != 0
        (line,) = stopped.stderr.strip().splitlines()
        assert line.startswith(f"error: MLflow at {proxy.uri}: ")
        assert "failed 4 times" in line
        assert "of 10 version(s) exported this time" in line
        assert "run the same command again to resume" in line
        partly = global_ids_on_server(server.uri, model)
        assert 0 < sum(partly.values()) < 10
        assert max(partly.values()) == 1

        proxy.fails = lambda number, path: False
        resumed = export(root, proxy.uri, *FAST_RETRIES)
    finally:
        proxy.close()
    assert resumed.returncode == 0, resumed.stderr
    assert global_ids_on_server(server.uri, model) == Counter(ids)
    for run in server_runs(server.uri, model):
        assert run.data.tags["watchkeeper.export_complete"] == "true"
        assert len(client(server.uri).get_metric_history(run.info.run_id, "loss")) == 3


@pytest.mark.timeout(300)
def test_a_kill_between_creating_runs_and_recording_them_duplicates_nothing(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 8, points=3)
    proxy = FaultyProxy(server.port, delay=lambda number, path: 0.2)
    try:
        exporting = subprocess.Popen(
            cli_command("export", "mlflow", "--tracking-uri", proxy.uri),
            cwd=root,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(
            lambda: sum(global_ids_on_server(server.uri, model).values()) >= 3, 120, "runs made"
        )
        os.killpg(exporting.pid, signal.SIGKILL)
        exporting.wait(30)
        proxy.delay = lambda number, path: 0.0
        resumed = export(root, proxy.uri)
    finally:
        proxy.close()
    assert resumed.returncode == 0, resumed.stderr
    assert global_ids_on_server(server.uri, model) == Counter(ids)
    versions = client(server.uri).search_model_versions(f"name = '{model}'")
    assert len(versions) == 8


@pytest.mark.timeout(300)
def test_a_slow_server_is_waited_for_then_retried(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 3, points=2)
    proxy = FaultyProxy(server.port, delay=lambda number, path: 4.0 if number in (5, 9) else 0.0)
    env = {**cli_env(), "MLFLOW_HTTP_REQUEST_TIMEOUT": "1"}
    try:
        done = export(root, proxy.uri, *FAST_RETRIES, env=env)
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert global_ids_on_server(server.uri, model) == Counter(ids)


@pytest.mark.timeout(300)
def test_the_token_goes_to_the_server_and_nowhere_else(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    add_versions(home, root, model, 2, points=2)
    token = f"tok-{uuid.uuid4().hex}"
    proxy = FaultyProxy(server.port, fails=lambda number, path: number == 6)
    env = {**cli_env(), "MLFLOW_TRACKING_TOKEN": token}
    try:
        done = export(root, proxy.uri, *FAST_RETRIES, env=env)
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert {auth for _, _, auth in proxy.seen} == {f"Bearer {token}"}
    assert token not in done.stdout + done.stderr
    for path in home.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


@pytest.mark.timeout(300)
def test_a_server_that_wants_credentials_refuses_at_once_and_takes_the_token(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 1, points=0)
    token = f"tok-{uuid.uuid4().hex}"
    proxy = FaultyProxy(server.port, required_authorization=f"Bearer {token}")
    try:
        refused = export(root, proxy.uri)
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert "error code 401" in line
        assert "(set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and" in line
        assert len(proxy.seen) == 1  # not retried
        done = export(root, proxy.uri, env={**cli_env(), "MLFLOW_TRACKING_TOKEN": token})
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert global_ids_on_server(server.uri, model) == Counter(ids)


def test_without_mlflow_installed_export_says_how_to_install_it(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "mlflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named mlflow')\n")
    root = make_repo(tmp_path)
    env = cli_env()
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    refused = subprocess.run(
        [sys.executable, "-m", "agent", "export", "mlflow", "--tracking-uri", "http://x"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: exporting to MLflow needs the mlflow package: "
        "pip install -e '.[mlflow]' in the Watchkeeper checkout"
    ]


@pytest.mark.timeout(300)
def test_runs_whose_record_was_lost_are_found_on_the_server_page_by_page(
    server: MlflowServer, model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.interop import mlflow_export
    from agent.ledger import open_ledger
    from agent.ledger.artifacts import ArtifactStore

    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    ids = add_versions(home, root, model, 7, points=2)
    monkeypatch.setattr(mlflow_export, "SEARCH_PAGE", 3)
    store = ArtifactStore(home / "artifacts")
    db = open_ledger()
    try:

        def export_in_process() -> mlflow_export.ExportReport:
            exporter = mlflow_export.MlflowExporter(
                mlflow_export.mlflow_client(server.uri), server.uri
            )
            return mlflow_export.export_versions(db, exporter, server.uri, store)

        first = export_in_process()
        assert (first.exported, first.interrupted) == (7, None)
        recorded = dict(db.execute("SELECT version_id, run_id FROM mlflow_exports").fetchall())
        db.execute("DELETE FROM mlflow_exports")
        db.conn.commit()

        again = export_in_process()
        assert (again.exported, again.already, again.interrupted) == (7, 0, None)
        assert dict(db.execute("SELECT version_id, run_id FROM mlflow_exports").fetchall()) == (
            recorded
        )
    finally:
        db.close()
    assert global_ids_on_server(server.uri, model) == Counter(ids)
    assert len(client(server.uri).search_model_versions(f"name = '{model}'")) == 7


@pytest.mark.timeout(300)
def test_a_second_export_while_one_runs_is_refused(
    server: MlflowServer, model: str, tmp_path: Path
) -> None:
    home = Path(os.environ["WATCHKEEPER_HOME"])
    root = make_repo(tmp_path)
    add_versions(home, root, model, 1, points=0)
    proxy = FaultyProxy(server.port, delay=lambda n, path: 20.0 if "runs/create" in path else 0)
    try:
        first = subprocess.Popen(
            cli_command("export", "mlflow", "--tracking-uri", proxy.uri),
            cwd=root,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(lambda: any("runs/create" in path for _, path, _ in proxy.seen), 120)
            second = export(root, server.uri)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
    finally:
        proxy.close()
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert "another `watchkeeper export mlflow` is running on this ledger" in line
    after_kill = export(root, server.uri)
    assert after_kill.returncode == 0, after_kill.stderr
