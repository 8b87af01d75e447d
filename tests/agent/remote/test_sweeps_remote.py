"""Sweeps over SSH and on Slurm: a real job array, its cancel, and the agent settling it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import UserConfig
from agent.daemon.scheduler import ScheduleSettings
from agent.daemon.service import AgentService, AgentSettings
from agent.ledger import open_ledger
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig
from agent.runs.step_queries import load_step_metrics
from tests.agent.remote.test_slurm import cluster, slurm_cluster  # noqa: F401 (fixtures)
from tests.agent.runs.gitrepo import cli_command, cli_env, make_repo, run_cli
from tests.support import wait_for

pytestmark = pytest.mark.ssh


def train_script(release: Path) -> str:
    """A point that waits for `release` or `release-LR` (paths on the test machine, which is
    the remote), writes a step and its weights, and reports its task id as a metric."""
    return textwrap.dedent(
        f"""\
        import json, os, pathlib, time
        lr, epochs = float(os.environ["WK_PARAM_LR"]), int(os.environ["WK_PARAM_EPOCHS"])
        release = pathlib.Path({str(release)!r})
        mine = release.with_name("release-%s" % lr)  # releases this point alone
        deadline = time.time() + 120
        while not (release.exists() or mine.exists()) and time.time() < deadline:
            time.sleep(0.05)
        with open(os.environ["WK_METRICS"], "a") as steps:
            steps.write(json.dumps({{"step": epochs, "loss": lr * epochs}}) + "\\n")
        pathlib.Path("model.pkl").write_text("weights %s %s" % (lr, epochs))
        task = int(os.environ.get("SLURM_ARRAY_TASK_ID", "-1"))
        json.dump({{"task": task}}, open("metrics.json", "w"))
        """
    )


def sweep_repo(tmp_path: Path, remote: str) -> Path:
    spec = (
        "[models.churn]\n"
        'train = "python train.py"\n'
        'deps = ["train.py"]\n'
        'outs = ["model.pkl"]\n'
        'metrics = "metrics.json"\n'
        "params = { lr = 0.01, epochs = 5 }\n"
        "params_env = true\n"
        f'remote = "{remote}"\n'
        'resources = { cpus = 1, memory = "100M", time = "00:05:00" }\n'
    )
    if remote != "cluster":
        spec = spec.replace('resources = { cpus = 1, memory = "100M", time = "00:05:00" }\n', "")
    return make_repo(tmp_path, files={"train.py": train_script(tmp_path / "release")}, spec=spec)


def start_sweep(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command("train", "churn", *args),
        cwd=root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ledger_rows(sql: str) -> list[tuple]:
    db = open_ledger()
    try:
        return [tuple(row) for row in db.execute(sql).fetchall()]
    finally:
        db.close()


def version_rows() -> list[dict]:
    db = open_ledger()
    try:
        rows = [dict(row) for row in db.query("SELECT * FROM model_versions ORDER BY version")]
    finally:
        db.close()
    for row in rows:
        for column in ("params", "metrics", "artifacts"):
            row[column] = json.loads(row[column] or "{}")
    return rows


def all_submitted(count: int) -> bool:
    rows = ledger_rows("SELECT state, remote_job_id FROM runs")
    return len(rows) == count and all(s == "running" and job for s, job in rows)


@pytest.mark.slurm
def test_a_sweep_on_slurm_is_one_job_array_with_a_version_per_task(
    cluster: RemoteConfig,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = sweep_repo(tmp_path, "cluster")
    (tmp_path / "release").touch()
    process = start_sweep(root, "--sweep", "lr=0.1,0.2", "--sweep", "epochs=1,2", "--parallel", "2")
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors
    rows = version_rows()
    assert [row["status"] for row in rows] == ["succeeded"] * 4, errors
    jobs = [row["remote_job_id"] for row in rows]
    array_job = jobs[0].split("_")[0]
    assert jobs == [f"{array_job}_{task}" for task in range(4)]
    (sweep_id, recorded_job), *_ = ledger_rows("SELECT id, array_job_id FROM sweeps")
    assert recorded_job == array_job and {row["sweep_id"] for row in rows} == {sweep_id}
    # each task ran as its own point: its own params, task id, artifacts and step metrics
    assert [row["metrics"]["task"] for row in rows] == [0, 1, 2, 3]
    assert [(row["params"]["lr"], row["params"]["epochs"]) for row in rows] == [
        (0.1, 1),
        (0.1, 2),
        (0.2, 1),
        (0.2, 2),
    ]
    assert len({row["artifacts"]["model.pkl"] for row in rows}) == 4
    db = open_ledger()
    try:
        losses = [load_step_metrics(db, row["id"])["loss"].values[-1] for row in rows]
    finally:
        db.close()
    assert losses == pytest.approx([0.1, 0.2, 0.2, 0.4])
    sweep_dir = Path(cluster.workdir) / "runs" / sweep_id
    assert sorted(path.name for path in sweep_dir.glob("slurm-*.out")) == [
        f"slurm-{task}.out" for task in range(4)
    ]
    shown = subprocess.run(
        ["scontrol", "show", "job", array_job], capture_output=True, text=True, check=False
    )
    if shown.returncode == 0:  # Slurm keeps finished jobs for MinJobAge only
        assert "ArrayTaskThrottle=2" in shown.stdout

    ranked = run_cli(root, "models", "compare", "churn", "--sweep", sweep_id, "--sort", "loss")
    assert ranked.returncode == 0, ranked.stderr
    order = [line.split()[1] for line in ranked.stdout.splitlines()[2:6]]
    assert order[0] == "v1" and order[-1] == "v4"


@pytest.mark.slurm
def test_cancelling_a_slurm_sweep_scancels_the_whole_array(
    cluster: RemoteConfig,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = sweep_repo(tmp_path, "cluster")
    process = start_sweep(root, "--sweep", "lr=0.1,0.2,0.3", "--parallel", "1")
    wait_for(lambda: all_submitted(3), 120, "the job array to be submitted")
    array_job = ledger_rows("SELECT array_job_id FROM sweeps")[0][0]
    cancel = run_cli(root, "runs", "cancel", ledger_rows("SELECT id FROM sweeps")[0][0])
    assert cancel.returncode == 0, cancel.stderr
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 1, errors
    assert [row["status"] for row in version_rows()] == ["cancelled"] * 3, errors
    queue = subprocess.run(
        ["squeue", "-h", "-j", array_job], capture_output=True, text=True, check=False
    )
    assert queue.stdout.strip() == ""


@pytest.fixture
def agent() -> Iterator[list[AgentService]]:
    started: list[AgentService] = []
    yield started
    for service in started:
        service.stop()


def start_agent(started: list[AgentService]) -> AgentService:
    paths = WatchkeeperPaths.from_environment().ensure()
    service = AgentService(
        paths,
        config=UserConfig.load(paths.config),
        settings=AgentSettings(schedule=ScheduleSettings(rescan_minutes=15, run_poll_seconds=0.5)),
    )
    service.start()
    started.append(service)
    return service


@pytest.mark.slurm
def test_the_agent_settles_every_task_of_a_sweep_across_its_restart(
    cluster: RemoteConfig,  # noqa: F811
    tmp_path: Path,
    agent: list[AgentService],
) -> None:
    """The `train` following the sweep dies; the agent settles one task, restarts, and
    settles the rest."""
    root = sweep_repo(tmp_path, "cluster")
    process = start_sweep(root, "--sweep", "lr=0.1,0.2,0.3")
    wait_for(lambda: all_submitted(3), 120, "the job array to be submitted")
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)

    def statuses() -> list[str]:
        return [row["status"] for row in version_rows()]

    first = start_agent(agent)
    (tmp_path / "release-0.1").touch()
    wait_for(lambda: statuses()[0] == "succeeded", 120, lambda: f"v1 settled: {statuses()}")
    assert statuses()[1:] == ["running", "running"]
    first.stop()
    agent.remove(first)
    start_agent(agent)
    (tmp_path / "release").touch()
    wait_for(lambda: statuses() == ["succeeded"] * 3, 180, lambda: f"all settled: {statuses()}")
    assert [row["metrics"]["task"] for row in version_rows()] == [0, 1, 2]


def test_a_sweep_over_ssh_runs_at_most_n_points_at_once(box: RemoteConfig, tmp_path: Path) -> None:
    root = sweep_repo(tmp_path, "box")
    process = start_sweep(root, "--sweep", "lr=0.1,0.2,0.3", "--parallel", "2")
    wait_for(
        lambda: ledger_rows("SELECT state FROM runs").count(("running",)) == 2,
        120,
        "two points to run",
    )
    assert ledger_rows("SELECT state FROM runs").count(("queued",)) == 1
    (tmp_path / "release").touch()
    _, errors = process.communicate(timeout=180)
    assert process.returncode == 0, errors
    rows = version_rows()
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert [row["executor"] for row in rows] == ["ssh"] * 3
    assert len({row["artifacts"]["model.pkl"] for row in rows}) == 3
