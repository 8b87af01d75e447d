"""The workflows of docs/ci.md, run step by step in a fresh clone with an empty home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.agent.runs.gitrepo import commit_all, git
from tests.agent.share.people import Person, make_remote, person
from tests.agent.share.workflows import ShellStep, github_steps, gitlab_job, yaml_blocks


def _team_with_a_pull_request(tmp_path: Path) -> tuple[Path, Person]:
    """Ada trained churn and pushed it; Bob's branch `feature` changes its code."""
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    ada.ok("train", "churn")
    ada.ok("push")
    bob = person(tmp_path, "Bob", remote)
    git(bob.clone, "checkout", "-q", "-b", "feature")
    (bob.clone / "src" / "helper.py").write_text('MESSAGE = "reviewed"\n')
    commit_all(bob.clone, "change the helper")
    git(bob.clone, "push", "-q", "origin", "feature")
    return remote, bob


def _fresh_clone(tmp_path: Path, remote: Path, name: str) -> Path:
    clone = tmp_path / name
    git(tmp_path, "clone", "-q", "--branch", "feature", str(remote), str(clone))
    return clone


def _shell_env(runner: Path) -> dict[str, str]:
    """What a CI runner gives a step: a PATH with python and watchkeeper, and no home of ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WATCHKEEPER", "PYTEST", "GIT_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(runner / "home")
    (runner / "home").mkdir(parents=True, exist_ok=True)
    return env


def _run(step: ShellStep, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a step the way the runners do: GitHub's `bash --noprofile --norc -eo pipefail`."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.script],
        cwd=cwd,
        env={**env, **step.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_github_workflow_reports_a_stale_model_and_fails_the_check(tmp_path: Path) -> None:
    remote, _ = _team_with_a_pull_request(tmp_path)
    clone = _fresh_clone(tmp_path, remote, "github-checkout")
    runner = tmp_path / "runner-temp"
    runner.mkdir()
    env = {**_shell_env(runner), "RUNNER_TEMP": str(runner), "GITHUB_BASE_REF": "main"}
    expressions = {"${{ runner.temp }}": str(runner), "${{ github.base_ref }}": "main"}
    steps = github_steps(yaml_blocks()[0])
    assert [step.name for step in steps] == [
        "Install Watchkeeper",
        "Fetch the shared ledger",
        "Which models does this change make stale?",
    ]
    results = []
    for step in steps:
        for key, value in step.env.items():
            for expression, replacement in expressions.items():
                value = value.replace(expression, replacement)
            step.env[key] = value
        results.append(_run(step, clone, env))
    install, fetch, gate = results
    assert install.returncode == 0, install.stderr
    assert fetch.returncode == 0, fetch.stderr
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert not (runner / "watchkeeper").exists() or (runner / "watchkeeper" / "ledger.db").exists()
    comment = (runner / "watchkeeper.md").read_text()
    assert "### churn: 🔴 stale" in comment
    assert "| trained by | Ada <ada@example.org> |" in comment
    assert "`src/helper.py`" in comment and "`watchkeeper train churn`" in comment
    report = json.loads((runner / "watchkeeper.json").read_text())
    assert report["exit_code"] == 1 and report["models"][0]["verdict"] == "stale"
    assert git(clone, "status", "--porcelain") == ""


def test_the_gitlab_job_reports_and_exits_with_the_gate(tmp_path: Path) -> None:
    remote, _ = _team_with_a_pull_request(tmp_path)
    clone = _fresh_clone(tmp_path, remote, "gitlab-checkout")
    git(clone, "update-ref", "-d", "refs/remotes/origin/main")  # the job fetches its target
    job = gitlab_job(yaml_blocks()[1])
    assert job.env["GIT_DEPTH"] == "0"
    env = {
        **_shell_env(tmp_path / "gitlab-runner"),
        "CI_PROJECT_DIR": str(clone),
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
    }
    exports = "".join(f'export {key}="{value}"\n' for key, value in job.env.items())
    done = _run(ShellStep(job.name, exports + job.script), clone, env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "### churn: 🔴 stale" in (clone / "watchkeeper.md").read_text()
    assert (clone / ".watchkeeper-home" / "ledger.db").exists()
    assert json.loads((clone / "watchkeeper.json").read_text())["stale"] == 1
