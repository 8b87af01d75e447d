"""`watchkeeper train --remote` over a real sshd: runs, faults and hostile outs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.errors import WatchkeeperError
from agent.ledger import open_ledger
from agent.ledger.artifacts import ArtifactStore
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig
from agent.remote.executors import SshExecutor, unpack_stream
from agent.runs.executor import Run, RunState, executor_for
from agent.runs.training import TrainResult, finish_run, train
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.agent.runs.gitrepo import cli_command, cli_env, git, make_repo
from tests.support import wait_for

pytestmark = pytest.mark.ssh

REMOTE_TRAIN = textwrap.dedent(
    """\
    import json, os, pathlib, sys, time
    params = json.load(open(os.environ["WK_PARAMS"]))
    print("argv", json.dumps(sys.argv[1:]), flush=True)
    print("params", json.dumps(params, sort_keys=True), flush=True)
    print("data", open("data/train.csv").read().strip(), flush=True)
    release = os.environ.get("WK_RUN_DIR", "") + "/release"
    if params.get("wait"):
        print("waiting", flush=True)
        deadline = time.time() + 60
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.05)
    pathlib.Path("model.pkl").write_text("weights " + params["tag"])
    json.dump({"auc": 0.75}, open("metrics.json", "w"))
    """
)

TRICKY_TAG = 'it\'s a "tag"; $(touch /tmp/pwned) `id` & *'


def spec(train_command: str, wait: bool = False) -> str:
    params = {"tag": TRICKY_TAG, "wait": wait}
    return (
        "[models.churn]\n"
        f"train = {json.dumps(train_command)}\n"
        'deps = ["train.py", "data/train.csv"]\n'
        'outs = ["model.pkl"]\n'
        'metrics = "metrics.json"\n'
        f"params = {{ tag = {json.dumps(params['tag'])}, wait = {str(wait).lower()} }}\n"
        'remote = "box"\n'
    )


def make_project(tmp_path: Path, wait: bool = False, train_script: str = REMOTE_TRAIN) -> Path:
    command = "python train.py --name 'a b' --quote \"it's\" --dollar '$HOME'"
    return make_repo(
        tmp_path,
        files={"train.py": train_script, "data/train.csv": "x,y\n1,2\n"},
        spec=spec(command, wait),
    )


def run_train(root: Path, **kwargs: Any) -> tuple[TrainResult, bytes]:
    db = open_ledger()
    log = bytearray()
    try:
        result = train(root, "churn", db=db, on_log=log.extend, **kwargs)
    finally:
        db.close()
    return result, bytes(log)


def remote_with_spaces(server: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path) -> Any:
    remote = make_remote(server)
    odd = RemoteConfig(**{**remote.__dict__, "workdir": str(tmp_path / "remote dir 'q' $x")})
    from agent.remote.config import save_remote

    save_remote(odd)
    return odd


def test_train_on_an_ssh_remote_end_to_end(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path
) -> None:
    remote = remote_with_spaces(shared_sshd, make_remote, tmp_path)
    root = make_project(tmp_path)
    result, log = run_train(root)
    assert result.status == "succeeded", (result.problem, log.decode())
    text = log.decode()
    assert 'argv ["--name", "a b", "--quote", "it\'s", "--dollar", "$HOME"]' in text
    assert json.dumps(TRICKY_TAG) in text and "data x,y" in text
    assert not Path("/tmp/pwned").exists()
    assert result.metrics == {"auc": 0.75}
    store = ArtifactStore(WatchkeeperPaths.from_environment().artifacts)
    assert store.path(result.artifacts["model.pkl"]).read_text() == "weights " + TRICKY_TAG
    db = open_ledger()
    row = db.execute(
        "SELECT executor, host, remote_job_id FROM model_versions WHERE run_id = ?",
        [result.run_id],
    ).fetchone()
    db.close()
    assert row[0] == "ssh" and row[1] == "127.0.0.1" and row[2].isdigit()
    remote_run = Path(remote.workdir) / "runs" / result.run_id
    assert (remote_run / "exitcode").read_text().strip() == "0"
    assert (remote_run / "code" / "train.py").read_text() == REMOTE_TRAIN


def test_run_survives_sshd_being_killed_and_restarted(
    private_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path
) -> None:
    remote = make_remote(private_sshd)
    root = make_project(tmp_path, wait=True)
    outcome: dict[str, Any] = {}
    started: dict[str, Run] = {}

    def go() -> None:
        try:
            outcome["result"] = run_train(root, on_start=lambda run, v: started.update(run=run))
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    wait_for(lambda: "run" in started, timeout=30, what="the run to start")
    remote_run = Path(remote.workdir) / "runs" / started["run"].id
    wait_for(lambda: b"waiting" in (remote_run / "log").read_bytes(), timeout=30, what="the script")
    private_sshd.stop()
    time.sleep(1.0)
    (remote_run / "release").write_text("go")  # the job goes on while sshd is down
    wait_for(lambda: (remote_run / "exitcode").exists(), timeout=30, what="the job to finish")
    private_sshd.start()
    worker.join(timeout=90)
    assert "error" not in outcome, outcome.get("error")
    result, log = outcome["result"]
    assert result.status == "succeeded", result.problem
    assert b"waiting" in log and b"params" in log
    assert "model.pkl" in result.artifacts


def start_direct_run(executor: SshExecutor, tmp_path: Path, script: str, name: str = "r1") -> Run:
    """A hand-made run layout (run.sh running `script`) started on the remote."""
    run_dir = tmp_path / "runs" / name
    (run_dir / "code").mkdir(parents=True)
    (run_dir / "code" / "job.sh").write_text(script)
    (run_dir / "params.json").write_text("{}")
    (run_dir / "run.sh").write_text(
        '#!/bin/sh\ncd "$WK_RUN_DIR/code" && sh job.sh\nstatus=$?\n'
        'printf "%s\\n" "$status" > "$WK_RUN_DIR/exitcode"\nexit $status\n'
    )
    run = Run(id=name, run_dir=run_dir, executor="ssh", remote=executor.remote.name)
    executor.start(run)
    return run


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting to be reaped do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_a_restarted_poller_reattaches_from_the_persisted_run(
    box: RemoteConfig, tmp_path: Path
) -> None:
    first = executor_for("box")
    assert isinstance(first, SshExecutor)
    run = start_direct_run(
        first, tmp_path, "echo one; while [ ! -f ../release ]; do sleep 0.05; done; echo two\n"
    )
    wait_for(lambda: first.read_log(run, 0).startswith(b"one"), timeout=30, what="first line")
    offset = len(first.read_log(run, 0))
    row = json.loads(
        json.dumps(
            {
                "id": run.id,
                "run_dir": str(run.run_dir),
                "executor": run.executor,
                "remote": run.remote,
                "host": run.host,
                "pid": run.pid,
                "remote_job_id": run.remote_job_id,
                "detail": run.detail,
            }
        )
    )
    first.session.drop()

    again = executor_for("box")
    reattached = Run.from_row(row)
    assert again.poll(reattached) is RunState.RUNNING
    Path(reattached.detail["remote_run_dir"], "release").write_text("")
    wait_for(lambda: again.poll(reattached) is RunState.SUCCEEDED, timeout=30, what="success")
    assert again.read_log(reattached, offset) == b"two\n"
    again.collect(reattached, reattached.run_dir)
    assert (reattached.run_dir / "exitcode").read_text().strip() == "0"
    assert (reattached.run_dir / "log").read_bytes() == b"one\ntwo\n"


def test_cancel_kills_the_whole_process_group(box: RemoteConfig, tmp_path: Path) -> None:
    executor = executor_for("box")
    run = start_direct_run(executor, tmp_path, "sleep 300 & sleep 301 & echo started; wait\n")
    wait_for(lambda: b"started" in executor.read_log(run, 0), timeout=30, what="start")
    assert run.pid is not None and group_alive(run.pid)
    executor.cancel(run)
    wait_for(lambda: not group_alive(run.pid or 0), timeout=10, what="the group to end")
    assert executor.poll(run) is RunState.CANCELLED


def test_a_vanished_process_is_lost_with_its_log_tail(box: RemoteConfig, tmp_path: Path) -> None:
    executor = executor_for("box")
    run = start_direct_run(executor, tmp_path, "echo last words; sleep 300\n")
    wait_for(lambda: b"last words" in executor.read_log(run, 0), timeout=30, what="output")
    assert run.pid is not None
    os.killpg(run.pid, signal.SIGKILL)  # as if the machine had rebooted under it
    wait_for(lambda: not group_alive(run.pid or 0), timeout=30, what="kill")
    time.sleep(1.1)
    assert executor.poll(run) is RunState.LOST
    assert "last words" in run.detail["problem"]


def test_hostile_outs_are_refused_and_nothing_lands_outside(
    box: RemoteConfig, tmp_path: Path
) -> None:
    executor = executor_for("box")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy me")
    script = (
        'mkdir -p "$WK_RUN_DIR/outs/sub"\n'
        f'ln -s {secret} "$WK_RUN_DIR/outs/model.pkl"\n'
        'ln -s ../../.. "$WK_RUN_DIR/outs/sub/up"\n'
        'echo fine > "$WK_RUN_DIR/outs/ok.txt"\n'
    )
    run = start_direct_run(executor, tmp_path, script)
    wait_for(lambda: executor.poll(run) is RunState.SUCCEEDED, timeout=30, what="the run")
    dest = tmp_path / "collected"
    executor.collect(run, dest)
    assert (dest / "outs" / "ok.txt").read_text() == "fine\n"
    assert not (dest / "outs" / "model.pkl").exists()
    assert not (dest / "outs" / "sub" / "up").exists()
    refused = " ".join(run.detail["refused_outs"])
    assert "outs/model.pkl" in refused and "outs/sub/up" in refused
    assert "refusing" in (dest / "log").read_text()
    copies = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and not path.is_symlink() and path.read_bytes() == secret.read_bytes()
    ]
    assert copies == [secret]


class HostileChannel:
    """A server that answers a fetch with names that try to leave the folder."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream

    def recv(self, size: int) -> bytes:
        chunk, self.stream = self.stream[:size], self.stream[size:]
        return chunk


def file_frame(name: str, payload: bytes) -> bytes:
    import struct
    import zlib

    header = json.dumps({"path": name, "size": len(payload), "mode": 0o644}).encode() + b"\n"
    return header + payload + struct.pack(">I", zlib.crc32(payload))


def test_fetch_refuses_absolute_parent_and_foreign_names(tmp_path: Path) -> None:
    dest = tmp_path / "run"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / "outs").symlink_to(outside)  # a link planted where outs/ should be
    stream = b"".join(
        [
            file_frame("/etc/evil", b"x"),
            file_frame("outs/../../evil", b"x"),
            file_frame("code/evil", b"x"),
            file_frame("outs/model.pkl", b"x"),
            file_frame("log", b"hello\n"),
            b'{"end": true}\n',
        ]
    )
    written, refused = unpack_stream(HostileChannel(stream), dest, ("outs", "exitcode", "log"))
    assert written == ["log"] and len(refused) == 4
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "evil").exists()
    assert (dest / "log").read_text() == "hello\n"


def test_killed_train_command_is_reattached_from_the_ledger(
    box: RemoteConfig, tmp_path: Path
) -> None:
    root = make_project(tmp_path, wait=True)
    git(root, "status")
    command = subprocess.Popen(
        cli_command("train", "churn", "--remote", "box"),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    paths = WatchkeeperPaths.from_environment()

    def running_row() -> dict[str, Any] | None:
        if not paths.ledger.exists():
            return None
        db = open_ledger(paths.ledger)
        try:
            rows = list(db.query("SELECT * FROM runs WHERE state = 'running'"))
        finally:
            db.close()
        return rows[0] if rows else None

    wait_for(lambda: running_row() is not None, timeout=60, what="the run row")
    command.kill()  # kill -9 the supervising command mid-run
    command.wait()
    row = running_row()
    assert row is not None
    row["detail"] = json.loads(row["detail"])
    run = Run.from_row(row)
    executor = executor_for(row["remote"])
    assert executor.poll(run) is RunState.RUNNING
    Path(run.detail["remote_run_dir"], "release").write_text("")
    wait_for(lambda: executor.poll(run) is RunState.SUCCEEDED, timeout=30, what="success")
    db = open_ledger(paths.ledger)
    try:
        result = finish_run(db, run, RunState.SUCCEEDED, executor, paths)
    finally:
        db.close()
    assert result.status == "succeeded", result.problem
    assert "model.pkl" in result.artifacts and result.metrics == {"auc": 0.75}


@pytest.mark.timeout(180)
def test_runs_logs_follow_stops_for_a_finished_remote_run_without_an_agent(
    box: RemoteConfig, tmp_path: Path
) -> None:
    root = make_project(tmp_path, wait=True)
    command = subprocess.Popen(
        cli_command("train", "churn", "--remote", "box"),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    paths = WatchkeeperPaths.from_environment()

    def running_row() -> dict[str, Any] | None:
        if not paths.ledger.exists():
            return None
        db = open_ledger(paths.ledger)
        try:
            rows = list(db.query("SELECT * FROM runs WHERE state = 'running'"))
        finally:
            db.close()
        return rows[0] if rows else None

    row = wait_for(running_row, 60, "the run row")
    command.kill()  # nobody is left to record the run: no train command, no agent
    command.wait()
    row["detail"] = json.loads(row["detail"])
    run = Run.from_row(row)
    executor = executor_for(row["remote"])
    Path(run.detail["remote_run_dir"], "release").write_text("")
    wait_for(lambda: executor.poll(run) is RunState.SUCCEEDED, 30, "the remote job to end")
    follower = subprocess.run(
        cli_command("runs", "logs", run.id, "--follow"),
        cwd=root,
        env=cli_env(),
        capture_output=True,
        timeout=60,
    )
    assert follower.returncode == 0, follower.stderr
    assert b"waiting\n" in follower.stdout and follower.stdout.endswith(b"waiting\n")
    assert b"has ended (succeeded)" in follower.stderr


def test_missing_python_stops_training_before_upload(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path
) -> None:
    remote = make_remote(shared_sshd, python="/opt/nowhere/python3")
    root = make_project(tmp_path)
    with pytest.raises(WatchkeeperError, match=r"python '/opt/nowhere/python3' was not found"):
        run_train(root)
    assert not (Path(remote.workdir) / "cache").exists()
    db = open_ledger()
    try:
        (state,) = db.execute("SELECT state FROM runs").fetchone()
    finally:
        db.close()
    assert state == "failed"


def test_data_deps_travel_through_the_cache_once(
    shared_sshd: LoopbackSshd, make_remote: RemoteFactory, tmp_path: Path
) -> None:
    remote = make_remote(shared_sshd)
    script = (
        "import json, os, pathlib\n"
        "rows = sorted(p.name for p in pathlib.Path('data/raw').iterdir())\n"
        "print('rows', rows, flush=True)\n"
        "pathlib.Path('model.pkl').write_text(','.join(rows))\n"
        "json.dump({'n': len(rows)}, open('metrics.json', 'w'))\n"
    )
    spec_text = (
        '[models.churn]\ntrain = "python train.py"\ndeps = ["train.py", "data/raw"]\n'
        'outs = ["model.pkl"]\nmetrics = "metrics.json"\nremote = "box"\n'
    )
    root = make_repo(tmp_path, files={"train.py": script, ".gitignore": "data/\n"}, spec=spec_text)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    for index in range(5):
        (raw / f"part{index}.csv").write_text("x,y\n" + f"{index},{index * 2}\n" * 1000)
    first, log = run_train(root)
    assert first.status == "succeeded", (first.problem, log.decode())
    assert first.metrics == {"n": 5}
    executor = executor_for("box")
    assert isinstance(executor, SshExecutor)
    (raw / "part9.csv").write_text("x,y\n9,18\n")
    second, _ = run_train(root)
    assert second.metrics == {"n": 6}
    db = open_ledger()
    try:
        (detail,) = db.execute("SELECT detail FROM runs WHERE id = ?", [second.run_id]).fetchone()
    finally:
        db.close()
    upload = json.loads(detail)["upload"]
    assert upload["blobs_sent"] <= 3  # the new data file, plus run.sh/params that name the run
    assert upload["transport"] == "paramiko"  # a small upload: no ssh processes
    assert Path(remote.workdir, "cache").is_dir()
