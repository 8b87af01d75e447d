"""Slurm through the sshd fixture, as a laptop reaches a login node: submit, states, cancel."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.ledger import open_ledger
from agent.remote.config import RemoteConfig
from agent.remote.executors import SlurmExecutor, parse_scontrol, run_state_for_slurm
from agent.runs.executor import Run, RunState, executor_for
from agent.runs.training import train
from tests.agent.remote.conftest import RemoteFactory
from tests.agent.remote.sshd_server import LoopbackSshd
from tests.agent.runs.gitrepo import make_repo
from tests.support import require, wait_for

REPO_ROOT = Path(__file__).resolve().parents[3]
START_SCRIPT = REPO_ROOT / "scripts" / "start-test-slurm.sh"
HOW_TO_ENABLE = "apt-get install -y slurm-wlm munge, then run scripts/start-test-slurm.sh as root"


def slurm_idle() -> bool:
    if shutil.which("sinfo") is None:
        return False
    completed = subprocess.run(
        ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20, check=False
    )
    return completed.returncode == 0 and any(
        state in completed.stdout for state in ("idle", "mix", "alloc")
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A running single-node Slurm, started with the project's script when it is not up."""
    if not slurm_idle() and shutil.which("slurmctld") and os.geteuid() == 0:
        subprocess.run([str(START_SCRIPT)], check=False, timeout=120)
    require(slurm_idle(), "Slurm", HOW_TO_ENABLE)


@pytest.fixture
def cluster(
    slurm_cluster: None, shared_sshd: LoopbackSshd, make_remote: RemoteFactory
) -> RemoteConfig:
    return make_remote(shared_sshd, "cluster", kind="slurm", partition="debug")


def wait_for_state(
    executor: SlurmExecutor, run: Run, wanted: RunState, timeout: float = 60
) -> None:
    seen: list[RunState] = []

    def reached() -> bool:
        seen.append(executor.poll(run))
        return seen[-1] is wanted

    wait_for(
        reached,
        timeout,
        lambda: f"{wanted}, still {seen[-1] if seen else None} ({executor.describe(run)})",
        0.2,
    )


def direct_run(tmp_path: Path, script: str, name: str) -> Run:
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "run.sh").write_text(
        f'#!/bin/sh\ncd "$WK_RUN_DIR"\n{script}\nstatus=$?\n'
        'printf "%s\\n" "$status" > "$WK_RUN_DIR/exitcode"\nexit $status\n'
    )
    (run_dir / "params.json").write_text("{}")
    return Run(id=name, run_dir=run_dir, executor="slurm", remote="cluster")


pytestmark = pytest.mark.slurm


@pytest.mark.ssh
def test_train_on_slurm_end_to_end(cluster: RemoteConfig, tmp_path: Path) -> None:
    train_script = (
        "import json, os, pathlib\n"
        "env = os.environ\n"
        "print('cpus', env.get('SLURM_CPUS_PER_TASK'), 'job', env.get('SLURM_JOB_ID'))\n"
        "pathlib.Path('model.pkl').write_text('slurm weights')\n"
        "json.dump({'auc': 0.8}, open('metrics.json', 'w'))\n"
    )
    spec = (
        '[models.churn]\ntrain = "python train.py"\ndeps = ["train.py"]\n'
        'outs = ["model.pkl"]\nmetrics = "metrics.json"\nremote = "cluster"\n'
        'resources = { cpus = 1, memory = "100M", time = "00:05:00" }\n'
    )
    root = make_repo(tmp_path, files={"train.py": train_script}, spec=spec)
    db = open_ledger()
    log = bytearray()
    try:
        result = train(root, "churn", db=db, on_log=log.extend)
        row = db.execute(
            "SELECT executor, remote_job_id FROM model_versions WHERE run_id = ?", [result.run_id]
        ).fetchone()
    finally:
        db.close()
    assert result.status == "succeeded", (result.problem, log.decode())
    assert result.metrics == {"auc": 0.8} and "model.pkl" in result.artifacts
    assert row[0] == "slurm" and row[1].isdigit()
    assert f"cpus 1 job {row[1]}" in log.decode()


@pytest.mark.ssh
def test_pending_with_its_reason_then_scancel(cluster: RemoteConfig, tmp_path: Path) -> None:
    executor = executor_for("cluster")
    assert isinstance(executor, SlurmExecutor)
    executor.remote = RemoteConfig(**{**cluster.__dict__, "sbatch_args": ("--hold",)})
    run = direct_run(tmp_path, "echo never", "held")
    executor.start(run)
    wait_for_state(executor, run, RunState.QUEUED)
    assert executor.describe(run) == "PENDING (JobHeldUser)"
    executor.cancel(run)
    wait_for_state(executor, run, RunState.CANCELLED)
    assert executor.describe(run).startswith("CANCELLED")


@pytest.mark.ssh
def test_failed_job_keeps_its_exit_code(cluster: RemoteConfig, tmp_path: Path) -> None:
    executor = executor_for("cluster")
    assert isinstance(executor, SlurmExecutor)
    run = direct_run(tmp_path, "echo failing; exit 3", "fails")
    executor.start(run)
    wait_for_state(executor, run, RunState.FAILED)
    executor.collect(run, run.run_dir)
    assert (run.run_dir / "exitcode").read_text().strip() == "3"
    assert "failing" in (run.run_dir / "log").read_text()
    assert executor.describe(run) in ("FAILED (NonZeroExitCode)", "FAILED")


@pytest.mark.ssh
def test_a_running_job_reports_running(cluster: RemoteConfig, tmp_path: Path) -> None:
    executor = executor_for("cluster")
    assert isinstance(executor, SlurmExecutor)
    run = direct_run(tmp_path, "touch started; while [ ! -f go ]; do sleep 0.1; done", "live")
    executor.start(run)
    remote_dir = Path(run.detail["remote_run_dir"])
    wait_for(lambda: (remote_dir / "started").exists(), 60, "the job to start", 0.1)
    assert executor.poll(run) is RunState.RUNNING
    assert executor.describe(run) == "RUNNING"
    (remote_dir / "go").write_text("")
    wait_for_state(executor, run, RunState.SUCCEEDED)


SCONTROL_TIMEOUT = (
    "JobId=42 JobName=wk-churn\n   UserId=ana(1000) GroupId=ana(1000)\n"
    "   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)\n"
    "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15\n"
)


def test_scontrol_fields_and_state_mapping() -> None:
    fields = parse_scontrol(SCONTROL_TIMEOUT)
    assert (fields["JobState"], fields["Reason"], fields["ExitCode"]) == (
        "TIMEOUT",
        "TimeLimit",
        "0:15",
    )
    assert run_state_for_slurm("PENDING") is RunState.QUEUED
    assert run_state_for_slurm("RUNNING") is RunState.RUNNING
    assert run_state_for_slurm("COMPLETING") is RunState.RUNNING
    assert run_state_for_slurm("TIMEOUT") is RunState.FAILED
    assert run_state_for_slurm("OUT_OF_MEMORY") is RunState.FAILED
    assert run_state_for_slurm("CANCELLED") is RunState.CANCELLED
    assert run_state_for_slurm("COMPLETED") is None  # decided by the exitcode file


@pytest.mark.ssh
def test_remote_test_lists_slurm_partitions(cluster: RemoteConfig) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    result = CliRunner().invoke(main, ["remote", "test", "cluster"])
    assert result.exit_code == 0, result.output
    assert "slurm: partitions" in result.output and "debug" in result.output
