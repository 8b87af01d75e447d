"""Two people share model versions through a bare git remote: push, pull, aliases, races."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.agent.runs.gitrepo import commit_all, git
from tests.agent.share.people import make_remote, person, remote_records


def test_a_trained_version_travels_to_a_teammate_with_its_lineage(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    ada.ok("train", "churn")
    branches_before = git(ada.clone, "for-each-ref", "refs/heads", "refs/remotes")
    status_before = git(ada.clone, "status", "--porcelain")

    wrong = ada.run("push", "chrun")
    assert wrong.returncode == 2
    assert "no versions of chrun" in wrong.stderr and "models with versions: churn" in wrong.stderr
    pushed = ada.json("push", "churn")

    assert pushed["versions"] == 1
    assert len(remote_records(remote)) == 1
    assert git(ada.clone, "for-each-ref", "refs/heads", "refs/remotes") == branches_before
    assert git(ada.clone, "status", "--porcelain") == status_before
    assert git(remote, "for-each-ref", "--format=%(refname)", "refs/heads") == "refs/heads/main\n"

    bob = person(tmp_path, "Bob", remote)
    assert bob.clone.resolve() != ada.clone.resolve()
    pulled = bob.json("pull")
    assert [(v["model"], v["version"]) for v in pulled["versions"]] == [("churn", 1)]

    [theirs] = bob.json("models", "list")
    [mine] = ada.json("models", "list")
    assert theirs["id"] == mine["id"] and len(theirs["id"]) == 32
    assert theirs["author"] == "Ada <ada@example.org>" and theirs["pulled"] is True
    assert mine["pulled"] is False
    assert theirs["repo"] == str(bob.clone.resolve())
    for key in ("commit", "code", "params", "metrics", "artifacts", "train_command", "host"):
        assert theirs[key] == mine[key], key
    assert theirs["state"] == "fresh" and theirs["model_state"] == "fresh"

    shown = bob.ok("models", "show", theirs["id"][:8]).stdout
    assert "Ada <ada@example.org> (pulled)" in shown

    (bob.clone / "src" / "helper.py").write_text('MESSAGE = "changed"\n')
    [after] = bob.json("models", "list")
    assert after["state"] == "stale"
    assert "src/helper.py" in " ".join(after["stale_reasons"])

    again = bob.json("pull")
    assert again["versions"] == [] and again["already"] == 1


def test_aliases_travel_with_their_history(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    ada.ok("train", "churn")
    ada.ok("train", "churn")
    ada.ok("models", "alias", "churn@1", "champion")
    ada.ok("models", "alias", "churn@2", "champion")
    ada.ok("models", "alias", "churn@1", "staging")
    ada.ok("models", "alias", "churn", "staging", "--remove")
    ada.ok("push")

    bob = person(tmp_path, "Bob", remote)
    bob.ok("pull")
    history = bob.json("models", "aliases", "churn")
    current = [entry for entry in history if entry["moved_at"] is None]
    assert [(entry["alias"], entry["version"]) for entry in current] == [("champion", 2)]
    assert len(history) == 3
    assert [e["version"] for e in history if e["alias"] == "staging"] == [1]
    assert bob.run("models", "show", "churn@staging").returncode == 2

    bob.ok("models", "alias", "churn@1", "champion")
    bob.ok("push")
    ada.ok("pull")
    mine = ada.json("models", "aliases", "churn")
    assert [(e["alias"], e["version"]) for e in mine if e["moved_at"] is None] == [("champion", 1)]
    assert len(mine) == 4
    assert (
        bob.json("models", "show", "churn@champion")["id"]
        == ada.json("models", "show", "churn@1")["id"]
    )


@pytest.mark.slow
def test_pushes_that_race_both_land_and_lose_no_record(tmp_path: Path) -> None:
    """A pre-receive hook holds both pushes until both have arrived, so one must lose the race."""
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    bob = person(tmp_path, "Bob", remote)
    ada_ids = ada.add_versions(30)
    bob_ids = bob.add_versions(40)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        textwrap.dedent(
            """\
            #!/bin/sh
            cat > /dev/null
            [ -e "$GIT_DIR/released" ] && exit 0
            touch "$GIT_DIR/arrived.$$"
            for i in $(seq 1 200); do
                [ "$(ls "$GIT_DIR" | grep -c '^arrived')" -ge 2 ] && break
                sleep 0.05
            done
            touch "$GIT_DIR/released"
            exit 0
            """
        )
    )
    hook.chmod(0o755)
    env = {"WK": "1"}
    processes = [
        subprocess.Popen(
            [*who_args, "push", "--json"],
            cwd=who.clone,
            env={**who.environment(), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who, who_args in ((ada, _cli()), (bob, _cli()))
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    import json

    results = [json.loads(stdout) for stdout, _ in outputs]
    assert max(result["attempts"] for result in results) >= 2
    on_remote = {Path(path).stem for path in remote_records(remote)}
    assert on_remote == set(ada_ids) | set(bob_ids)

    carol = person(tmp_path, "Carol", remote)
    pulled = carol.json("pull")
    assert len(pulled["versions"]) == 70


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "agent"]


def test_a_teammate_commit_in_a_branch_does_not_move_the_ledger_ref(tmp_path: Path) -> None:
    """Records live on their own ref: pushing branches and the ledger never mix."""
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    ada.add_versions(2)
    ada.ok("push")
    tip = git(remote, "rev-parse", "refs/watchkeeper/ledger").strip()
    (ada.clone / "notes.txt").write_text("x\n")
    commit_all(ada.clone, "notes")
    git(ada.clone, "push", "-q", "origin", "main")
    assert git(remote, "rev-parse", "refs/watchkeeper/ledger").strip() == tip
    assert "notes.txt" not in git(remote, "ls-tree", "-r", "--name-only", "refs/watchkeeper/ledger")


def test_a_running_agent_sees_what_a_pull_brings(tmp_path: Path) -> None:
    import json as json_module

    from agent.client import AgentClient

    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    ada.ok("train", "churn")
    ada.ok("push")
    bob = person(tmp_path, "Bob", remote)
    bob.ok("init")
    bob.ok("agent", "start")
    try:
        with AgentClient.connect(bob.home / "agent.sock", timeout=60) as client:
            events = client.subscribe(["verdicts"])
            pulled = bob.json("pull")
            assert pulled["agent_notified"] is True
            for event in events:
                models = {m["model"]: m for m in event["data"]["models"]}
                if models.get("churn", {}).get("verdict") == "fresh":
                    break
        assert models["churn"]["version"] == 1
        verdicts = bob.json("status")
        assert json_module.dumps(verdicts).count('"fresh"') >= 1
    finally:
        bob.run("agent", "stop")


def test_an_older_version_pulled_later_does_not_become_the_current_one(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    bob = person(tmp_path, "Bob", remote)
    [older] = ada.add_versions(1)
    [newer] = bob.add_versions(1)
    ada.ok("push")
    bob.ok("pull")
    pulled = bob.json("models", "show", older[:10])
    assert pulled["version"] == 2 and pulled["current"] is False
    assert bob.json("models", "show", "churn@current")["id"] == newer
