"""The agent end to end, in process: real git, real ledger, real socket, real training."""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.client import AgentCallError, AgentClient
from agent.config import UserConfig
from agent.daemon.scheduler import ScheduleSettings
from agent.daemon.service import AgentService
from agent.daemon.settings import AgentSettings
from agent.ledger import open_ledger
from agent.paths import WatchkeeperPaths
from tests.agent.daemon.conftest import REPO_ROOT, git, make_repo
from tests.support import BackgroundCall, wait_for

PYTHON = shlex.quote(sys.executable)

TRAIN = textwrap.dedent(
    """\
    import json, os, pathlib, time
    params = json.load(open(os.environ["WK_PARAMS"]))
    rows = pathlib.Path("data/train.csv").read_text().splitlines()
    print("rows", len(rows), flush=True)
    time.sleep(params.get("sleep", 0))
    pathlib.Path("model.txt").write_text(str(len(rows)))
    json.dump({"rows": len(rows)}, open("metrics.json", "w"))
    """
)


def model_spec(on_stale: str = "notify") -> str:
    return textwrap.dedent(
        f"""\
        [models.churn]
        train = "{PYTHON} train.py"
        deps = ["train.py", "data/train.csv"]
        outs = ["model.txt"]
        metrics = "metrics.json"
        params = {{ sleep = 0 }}
        params_env = true
        on_stale = "{on_stale}"
        """
    )


def settings(**overrides: Any) -> AgentSettings:
    base: dict[str, Any] = {
        "schedule": ScheduleSettings(rescan_minutes=15, run_poll_seconds=0.5),
        "save_coalesce_seconds": 30.0,
        "data_debounce_seconds": 0.2,
        "data_max_delay_seconds": 1.0,
        "git_debounce_seconds": 0.2,
        "staleness_debounce_seconds": 0.3,
        "retrain_quiet_seconds": 0.5,
        "health_interval_seconds": 0.2,
        "poll_interval_seconds": 0.5,
    }
    base.update(overrides)
    return AgentSettings(**base)


class EventStream:
    """A subscriber connection read on a thread into a queue."""

    def __init__(self, path: Path, events: list[str] | None = None) -> None:
        self.client = AgentClient.connect(path, timeout=None)
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._stream = self.client.subscribe(events)
        self._closed = False
        first = threading.Event()

        def read() -> None:
            try:
                first.set()
                for message in self._stream:
                    self.queue.put(message)
            except Exception as error:
                if not self._closed:  # a failure, not the end of the test closing the stream
                    self.queue.put({"reader_error": error})

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()
        first.wait(2)

    def next(self, event_kind: str, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {event_kind} event matching {match} within {timeout} s; saw {self.seen}"
                )
            try:
                message = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if "reader_error" in message:
                raise AssertionError(
                    f"the event stream failed while waiting for {event_kind}"
                ) from message["reader_error"]
            data = message["data"]
            self.seen.append(message)
            if message["event"] == event_kind and all(data.get(k) == v for k, v in match.items()):
                return data

    def close(self) -> None:
        self._closed = True
        self.client.close()


@pytest.fixture
def paths(watchkeeper_home: Path) -> WatchkeeperPaths:
    return WatchkeeperPaths.from_environment().ensure()


def start_agent(paths: WatchkeeperPaths, **overrides: Any) -> AgentService:
    service = AgentService(
        paths, config=UserConfig.load(paths.config), settings=settings(**overrides)
    )
    service.start()
    assert service.worker.wait_idle(30)
    return service


@pytest.fixture
def agent_factory(paths: WatchkeeperPaths) -> Iterator[Any]:
    started: list[AgentService] = []

    def factory(**overrides: Any) -> AgentService:
        service = start_agent(paths, **overrides)
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()


def watch(paths: WatchkeeperPaths, path: Path, *, data: bool = False) -> None:
    from agent.daemon.watchlist import add_watch

    add_watch(path, data=data, config=UserConfig.load(paths.config))


def count(paths: WatchkeeperPaths, sql: str, params: list[Any] | None = None) -> int:
    # A plain read-only connection: this process also hosts the agent's connections.
    connection = sqlite3.connect(f"file:{paths.ledger}?mode=ro", uri=True, timeout=10)
    try:
        return int(connection.execute(sql, params or []).fetchone()[0])
    finally:
        connection.close()


def test_commits_and_saves_reach_the_ledger(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {".gitignore": "*.log\n", "a.py": "a = 1\n"})
    watch(paths, repo)
    agent = agent_factory()
    assert count(paths, "SELECT COUNT(*) FROM commits") == 1
    (repo / "a.py").write_text("a = 2\n")
    (repo / "a.py").write_text("a = 3\n")  # same file within 30 s: one save event
    (repo / "b.py").write_text("b = 1\n")
    (repo / "debug.log").write_text("ignored\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "second")
    git(
        repo,
        "-c",
        "user.email=someone@else.org",
        "commit",
        "-q",
        "--allow-empty",
        "--author",
        "Other <someone@else.org>",
        "-m",
        "by someone else",
    )
    wait_for(lambda: count(paths, "SELECT COUNT(*) FROM commits") == 3)
    wait_for(lambda: agent.saves.pending_count() == 0)
    agent.worker.wait_idle(10)
    saves = count(paths, "SELECT COUNT(*) FROM activity_events WHERE kind = 'save'")
    assert saves == 2
    assert count(paths, "SELECT COUNT(*) FROM activity_events WHERE path = 'debug.log'") == 0
    # commit events: the user's own commits only, each once
    assert count(paths, "SELECT COUNT(*) FROM activity_events WHERE kind = 'commit'") == 2
    with AgentClient.connect(paths.socket) as client:
        status = client.call("status")
    assert status["counters"]["commits_added"] == 3
    assert [w["mode"] for w in status["watches"]] == ["inotify"]


def test_watch_add_and_remove_over_the_socket(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = make_repo(tmp_path / "repo")
    data = tmp_path / "data"
    data.mkdir()
    agent_factory()
    with AgentClient.connect(paths.socket) as client:
        assert client.call("watch_add", path=str(repo)) == {
            "path": str(repo),
            "kind": "repo",
            "mode": "inotify",
        }
        assert client.call("watch_add", path=str(data), data=True)["kind"] == "data"
        with pytest.raises(AgentCallError, match="not the root of a git repository"):
            client.call("watch_add", path=str(data))
        listed = {(w["path"], w["kind"]) for w in client.call("watch_list")}
        assert listed == {(str(repo), "repo"), (str(data), "data")}
        wait_for(lambda: count(paths, "SELECT COUNT(*) FROM commits") == 1)
        assert client.call("watch_remove", path=str(repo)) == [
            {"path": str(repo), "kind": "repo", "why": "added by hand"}
        ]
        with pytest.raises(AgentCallError, match="is not watched"):
            client.call("watch_remove", path=str(repo))
    config = UserConfig.load(paths.config)
    assert config.watched_repos == []
    assert config.watched_data == [str(data)]


def test_a_deleted_watched_folder_raises_an_alert_and_is_watched_again(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    watch(paths, data, data=True)
    agent = agent_factory()
    events = EventStream(paths.socket, ["alert"])
    try:
        shutil.rmtree(data)
        alert = events.next("alert", kind="watch")
        assert str(data) in alert["message"]
        with AgentClient.connect(paths.socket) as client:
            open_alerts = client.call("alerts")
            assert [a["kind"] for a in open_alerts] == ["watch"]
        data.mkdir()
        resolved = events.next("alert", id=alert["id"], state="resolved")
        assert resolved["resolution"] == f"{data} is back"
        wait_for(lambda: agent.watches.roots[(data, "data")].mode == "inotify")
        with AgentClient.connect(paths.socket) as client:
            assert client.call("alerts") == []
            [listed] = client.call("alerts", all=True)
            assert listed["state"] == "resolved"
            acked = client.call("ack_alert", id=listed["id"])
            assert acked["acknowledged_at"] is not None
            with pytest.raises(AgentCallError, match="no alert with id 999"):
                client.call("ack_alert", id=999)
    finally:
        events.close()


def trained_repo(tmp_path: Path, paths: WatchkeeperPaths, on_stale: str = "notify") -> Path:
    from agent.runs.training import train

    repo = make_repo(
        tmp_path / "repo",
        {
            "train.py": TRAIN,
            "watchkeeper.toml": model_spec(on_stale),
            ".gitignore": "data/\n",
            "data/train.csv": "age,city\n31,Paris\n42,Oslo\n",
        },
    )
    db = open_ledger(paths.ledger)
    try:
        result = train(repo, "churn", db=db, paths=paths)
    finally:
        db.close()
    assert result.status == "succeeded", result.log_tail
    return repo


def test_a_data_change_publishes_a_snapshot_and_a_stale_alert(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = trained_repo(tmp_path, paths)
    watch(paths, repo)
    agent = agent_factory()
    assert (repo / "data" / "train.csv", "data") in agent.watches.roots
    events = EventStream(paths.socket)
    try:
        with (repo / "data" / "train.csv").open("a") as handle:
            handle.write("55,Rome\n")
        snapshot = events.next("snapshot", source=str(repo / "data" / "train.csv"))
        assert snapshot["n_files"] == 1
        assert snapshot["modified"] == ["train.csv"]
        alert = events.next("alert")
        assert alert["kind"] in ("stale", "drift")
        assert "churn@1" in alert["message"]
        assert any("data/train.csv" in reason for reason in alert["reasons"])
        assert alert["versions"][0]["model"] == "churn"
        # Drift arrives later as a dated update; the alert's own text stays as it was.
        updated = events.next("alert", id=alert["id"], updated=True)
        assert updated["message"] == alert["message"]
        assert updated["updates"][0]["drift"] and updated["drift"]
        # One alert per model and cause: a check and a further change add none.
        agent.check_staleness()
        with (repo / "data" / "train.csv").open("a") as handle:
            handle.write("60,Lima\n")
        events.next("snapshot", source=str(repo / "data" / "train.csv"))
        verdicts = events.next("verdicts")
        assert [m["verdict"] for m in verdicts["models"]] == ["stale"]
        assert count(paths, "SELECT COUNT(*) FROM alerts") == 1
    finally:
        events.close()


def test_snapshots_of_a_watched_folder_keep_their_content_as_watch_keep_data_says(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    from agent.ledger.artifacts import ArtifactStore, file_digest

    data = tmp_path / "watched"
    data.mkdir()
    (data / "sales.csv").write_text("id,amount\n1,10\n")
    watch(paths, data, data=True)
    agent_factory(keep_data="always")
    events = EventStream(paths.socket)
    try:
        (data / "sales.csv").write_text("id,amount\n1,10\n2,20\n")
        snapshot = events.next("snapshot", source=str(data))
    finally:
        events.close()

    assert snapshot["keep_notes"] == []
    connection = sqlite3.connect(f"file:{paths.ledger}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute(
            "SELECT path, digest FROM snapshot_blobs WHERE snapshot_id = ?",
            [snapshot["snapshot_id"]],
        ).fetchall()
    finally:
        connection.close()
    store = ArtifactStore(paths.artifacts)
    assert rows == [("sales.csv", file_digest(data / "sales.csv"))]
    assert store.path(rows[0][1]).read_text() == "id,amount\n1,10\n2,20\n"


def test_on_stale_retrain_queues_one_run_after_quiet(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = trained_repo(tmp_path, paths, on_stale="retrain")
    watch(paths, repo)
    agent_factory(retrain_quiet_seconds=1.0)
    events = EventStream(paths.socket)
    try:
        for line in ("55,Rome\n", "56,Lima\n", "57,Kyiv\n"):
            with (repo / "data" / "train.csv").open("a") as handle:
                handle.write(line)
            time.sleep(0.3)
        events.next("alert")
        started = events.next("run_state", state="running", timeout=30)
        finished = events.next("run_state", run=started["run"], state="succeeded", timeout=60)
        assert finished["exit_code"] == 0
        time.sleep(1.5)
        assert count(paths, "SELECT COUNT(*) FROM runs") == 2  # the first training + one retrain
        assert count(paths, "SELECT MAX(version) FROM model_versions") == 2
    finally:
        events.close()


def test_train_and_cancel_over_the_socket_stream_run_events(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = trained_repo(tmp_path, paths)
    agent_factory()
    events = EventStream(paths.socket, ["run_state", "run_log"])
    try:
        with AgentClient.connect(paths.socket) as client:
            started = client.call("train", model="churn", repo=str(repo))
            assert started["version"] == 2
            log_event = events.next("run_log", run=started["run"])
            assert "rows 3" in log_event["text"]
            events.next("run_state", run=started["run"], state="succeeded", timeout=60)
            slow = client.call("train", model="churn", repo=str(repo), params={"sleep": 60})
            events.next("run_state", run=slow["run"], state="running")
            assert client.call("cancel", run=slow["run"]) == {
                "run": slow["run"],
                "cancelling": True,
            }
            events.next("run_state", run=slow["run"], state="cancelled", timeout=10)
            runs = {r["id"]: r["state"] for r in client.call("runs")}
            assert runs[slow["run"]] == "cancelled"
            models = client.call("models")
            assert [(m["model"], m["version"]) for m in models] == [("churn", 3)]
            with pytest.raises(AgentCallError, match="no model named"):
                client.call("train", model="nope", repo=str(repo))
    finally:
        events.close()


def test_coding_time_refit_is_bookkept_as_a_model_version(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = make_repo(tmp_path / "repo")
    day = int(time.time()) // 86400 * 86400 - 5 * 86400
    for n in range(40):
        stamp = day + (n // 8) * 86400 + 9 * 3600 + (n % 8) * 1200
        (repo / "f.txt").write_text(str(n))
        git(repo, "add", "-A")
        env_date = f"{stamp} +0000"
        git(
            repo,
            "-c",
            "user.email=dev@example.com",
            "commit",
            "-q",
            "-m",
            f"c{n}",
            "--date",
            env_date,
        )
    watch(paths, repo)
    agent_factory()
    events = EventStream(paths.socket, ["coding_time"])
    try:
        with AgentClient.connect(paths.socket) as client:
            summary = client.call("coding_time", refit=True)
            event = events.next("coding_time")
            assert event["unchanged"] is False
            assert summary["model"]["version"] == 1
            assert summary["model"]["events_fingerprint"] == event["fingerprint"]
            assert isinstance(summary["model"]["metrics"]["log_likelihood"], float)
            assert summary["days"] and all(d["coding_minutes"] >= 0 for d in summary["days"])
            assert any(d["git_hours_minutes"] > 0 for d in summary["days"])
            again = client.call("coding_time", refit=True)
            assert again["model"]["version"] == 1  # same events: nothing new recorded
            [builtin] = client.call("models")
            assert (builtin["model"], builtin["repo"]) == ("coding-time", "builtin:watchkeeper")
            assert builtin["stale"] is False and builtin["stale_reasons"] == []
            assert builtin["builtin"] is True
    finally:
        events.close()
    db = sqlite3.connect(f"file:{paths.ledger}?mode=ro", uri=True)
    row = db.execute(
        "SELECT m.name, v.params, v.metrics, v.data FROM model_versions v "
        "JOIN models m ON m.id = v.model_id"
    ).fetchone()
    assert row[0] == "coding-time"
    assert "parameters" in json.loads(row[1])
    assert "log_likelihood" in json.loads(row[2])
    assert len(json.loads(row[3])["events"]["fingerprint"]) == 64
    days = db.execute("SELECT COUNT(*), MIN(model_version_id) FROM coding_time_days").fetchone()
    assert days[0] >= 5 and days[1] is not None


def test_run_polling_follows_a_run_whose_supervisor_died(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    """`watchkeeper train` is killed mid-run; the agent's run polling sees the run to its end."""
    repo = trained_repo(tmp_path, paths)
    agent_factory()
    events = EventStream(paths.socket, ["run_state", "run_log"])
    trainer = subprocess.Popen(
        [sys.executable, "-m", "agent", "train", "churn", "--param", "sleep=4"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        wait_for(
            lambda: count(paths, "SELECT COUNT(*) FROM runs WHERE state = 'running'") == 1,
            timeout=30,
        )
        trainer.kill()  # the supervising command dies; the run itself carries on
        trainer.wait(10)
        log_event = events.next("run_log", timeout=20)
        assert "rows 3" in log_event["text"]
        finished = events.next("run_state", state="succeeded", timeout=30)
        assert finished["run"] == log_event["run"]
        assert finished["model"] == "churn"
        assert count(paths, "SELECT COUNT(*) FROM model_versions WHERE status = 'succeeded'") == 2
    finally:
        trainer.kill()
        events.close()


def test_data_deps_of_a_model_trained_while_the_agent_runs_are_watched(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {
            "train.py": TRAIN,
            "watchkeeper.toml": model_spec(),
            ".gitignore": "data/\n",
            "data/train.csv": "age,city\n31,Paris\n",
        },
    )
    watch(paths, repo)
    agent = agent_factory()
    data = repo / "data" / "train.csv"
    assert (data, "data") not in agent.watches.roots
    trained = subprocess.run(
        [sys.executable, "-m", "agent", "train", "churn"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert trained.returncode == 0, trained.stderr
    wait_for(lambda: (data, "data") in agent.watches.roots, timeout=10)
    assert agent.worker.wait_idle(20)
    events = EventStream(paths.socket, ["alert"])
    try:
        with data.open("a") as handle:
            handle.write("44,Bern\n")
        alert = events.next("alert")
        assert "churn@1 is stale: data changed in data/train.csv" in alert["message"]
    finally:
        events.close()


def test_every_ledger_connection_is_opened_by_open_ledger_and_keeps_the_locks(
    paths: WatchkeeperPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening and closing more connections must not drop the write lock another one holds."""
    monkeypatch.setenv("WATCHKEEPER_BUSY_TIMEOUT_MS", "1500")
    service = AgentService(paths, config=UserConfig.load(paths.config), settings=settings())
    holder = service.db()
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO repos (path, name) VALUES ('/held', 'held')")
    opened: list[tuple[int, int, str]] = []

    def open_and_close() -> None:
        db = service.new_connection()
        opened.append(
            (
                db.execute("PRAGMA foreign_keys").fetchone()[0],
                db.execute("PRAGMA busy_timeout").fetchone()[0],
                db.execute("PRAGMA journal_mode").fetchone()[0],
            )
        )
        db.close()

    openers = [BackgroundCall(open_and_close) for _ in range(4)]
    for opener in openers:
        opener.result(10)
    assert opened == [(1, 1500, "wal")] * 4
    write = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0); "
        "c.execute('BEGIN IMMEDIATE'); c.execute(\"INSERT INTO repos (path) VALUES ('/other')\"); "
        "c.commit()"
    )
    blocked = subprocess.run(
        [sys.executable, "-c", write, str(paths.ledger)], capture_output=True, text=True
    )
    assert blocked.returncode != 0 and "database is locked" in blocked.stderr
    holder.execute("COMMIT")
    subprocess.run([sys.executable, "-c", write, str(paths.ledger)], check=True)
    assert count(paths, "SELECT COUNT(*) FROM repos") == 2
    holder.close()


def test_pause_and_resume_watching_over_the_socket(
    tmp_path: Path, paths: WatchkeeperPaths, agent_factory: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": "a = 1\n"})
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("x\n1\n")
    watch(paths, repo)
    watch(paths, data, data=True)
    agent = agent_factory()
    wait_for(lambda: count(paths, "SELECT COUNT(*) FROM data_snapshots") == 1)
    saves = "SELECT COUNT(*) FROM activity_events WHERE kind = 'save'"
    with AgentClient.connect(paths.socket) as client:
        assert client.call("status")["paused"] is False
        paused = client.call("pause_watching")
        assert paused["paused"] is True and paused["paused_at"] > 0
        assert client.call("pause_watching")["paused_at"] == paused["paused_at"]
        status = client.call("status")
        assert (status["paused"], status["paused_at"]) == (True, paused["paused_at"])
        (repo / "a.py").write_text("a = 2\n")
        git(repo, "commit", "-q", "-am", "while paused")
        (data / "rows.csv").write_text("x\n1\n2\n")
        shutil.rmtree(data)  # no alert for a vanished folder while paused either
        time.sleep(2.5)  # longer than every debounce the test agent uses
        assert client.call("rescan") == {"queued": False, "paused": True}
        agent.worker.wait_idle(10)
        assert count(paths, saves) == 0
        assert count(paths, "SELECT COUNT(*) FROM commits") == 1
        assert count(paths, "SELECT COUNT(*) FROM alerts") == 0
        assert client.call("status")["counters"]["saves_recorded"] == 0
        data.mkdir()
        (data / "rows.csv").write_text("x\n1\n2\n")
        resumed = client.call("resume_watching")
        assert resumed["paused"] is False and resumed["paused_seconds"] >= 2.5
        assert client.call("status")["paused"] is False
        # Resuming rescans: the commit and the data change made meanwhile are caught up.
        wait_for(lambda: count(paths, "SELECT COUNT(*) FROM commits") == 2)
        wait_for(lambda: count(paths, "SELECT COUNT(*) FROM data_snapshots") == 2)
        (repo / "b.py").write_text("b = 1\n")
        wait_for(lambda: count(paths, saves) == 1)
        assert client.call("resume_watching") == {"paused": False, "paused_seconds": 0.0}
