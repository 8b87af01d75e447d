"""Sharing benchmark: push and pull of 1,000 version records against git itself, and `ci`.

The peers run in the same process on the same disk, on a bare remote of their own:

- `watchkeeper push` of 1,000 new versions (records only) against `git push` of a commit
  holding 1,000 small files of the same size (the commit already made): budget 2x;
- `watchkeeper pull` of those 1,000 into a fresh clone and an empty home against
  `git fetch` + `git checkout` of that commit in a fresh clone: budget 2x;
- `watchkeeper ci` in a fresh clone with an empty home, on a repo with 20 models and 10,000
  files, data absent: budget 3 s.

Each figure is the median of --rounds rounds; the watchkeeper figures are whole CLI runs,
Python start-up included.

Run: .venv/bin/python benchmarks/bench_share.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.ledger import open_ledger, write_transaction  # noqa: E402
from agent.ledger.queries import (  # noqa: E402
    ensure_model,
    insert_row,
    next_version,
    register_repo,
)
from agent.project.git import working_hashes  # noqa: E402

N_VERSIONS = 1_000
N_MODELS = 20
N_FILES = 10_000
PUSH_BUDGET = 2.0
PULL_BUDGET = 2.0
CI_BUDGET_S = 3.0


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return done.stdout.decode()


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()}")
    return elapsed


def watchkeeper(home: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "WATCHKEEPER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    return [sys.executable, "-m", "agent"], env


def new_repo(root: Path, remote: Path, spec: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "bench@example.org")
    git(root, "config", "user.name", "Bench")
    (root / "watchkeeper.toml").write_text(spec)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "-q", "origin", "main")
    return root


def add_versions(home: Path, root: Path, model: str, count: int, code: dict[str, str]) -> None:
    """Record `count` finished versions of `model` in the ledger, as `train` records them."""
    head = git(root, "rev-parse", "HEAD").strip()
    os.environ["WATCHKEEPER_HOME"] = str(home)
    db = open_ledger(home / "ledger.db")
    with write_transaction(db):
        model_id = ensure_model(db, register_repo(db, root), model)
        first = next_version(db, model_id)
        now = time.time()
        for offset in range(count):
            insert_row(
                db,
                "model_versions",
                {
                    "model_id": model_id,
                    "version": first + offset,
                    "status": "succeeded",
                    "commit_sha": head,
                    "dirty": 0,
                    "train_command": "python train.py",
                    "params": {"lr": 0.01, "epochs": 5},
                    "metrics": {"auc": 0.5 + offset / (2 * count), "loss": 0.1},
                    "data": {},
                    "code": code,
                    "artifacts": {"model.pkl": f"blake3:{offset:064x}"},
                    "executor": "local",
                    "host": "bench",
                    "started_at": now + offset,
                    "ended_at": now + offset + 0.5,
                    "exit_code": 0,
                },
            )
    db.close()


def push_and_pull_round(folder: Path) -> dict[str, float]:
    ours_remote, peer_remote = folder / "ours.git", folder / "peer.git"
    for bare in (ours_remote, peer_remote):
        git(folder, "init", "-q", "--bare", str(bare))
        git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
    spec = '[models.churn]\ntrain = "python train.py"\ndeps = ["train.py"]\n'
    files = {"train.py": "print('train')\n"}
    ada_home = folder / "home-ada"
    ada = new_repo(folder / "ada", ours_remote, spec, files)
    add_versions(ada_home, ada, "churn", N_VERSIONS, {"train.py": "0" * 40})
    command, env = watchkeeper(ada_home)
    results = {"push": timed([*command, "push"], ada, env)}

    record_size = len(git(ours_remote, "cat-file", "-p", _first_record(ours_remote)))
    peer = new_repo(folder / "peer", peer_remote, spec, files)
    git(peer, "checkout", "-q", "-b", "records")
    for index in range(N_VERSIONS):
        path = peer / "records" / f"{index:03d}"[:2] / f"{index:032x}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{index:032x}" * (record_size // 32 + 1))
    git(peer, "add", "-A")
    git(peer, "commit", "-q", "-m", "1,000 files")
    results["git push"] = timed(["git", "push", "-q", "origin", "records"], peer)

    bob = folder / "bob"
    git(folder, "clone", "-q", str(ours_remote), str(bob))
    command, env = watchkeeper(folder / "home-bob")
    results["pull"] = timed([*command, "pull"], bob, env)

    carol = folder / "carol"
    git(folder, "clone", "-q", "--single-branch", "--branch", "main", str(peer_remote), str(carol))
    started = time.perf_counter()
    git(carol, "fetch", "-q", "origin", "records:records")
    git(carol, "checkout", "-q", "records")
    results["git fetch + checkout"] = time.perf_counter() - started
    return results


def _first_record(remote: Path) -> str:
    listing = git(remote, "ls-tree", "-r", "refs/watchkeeper/ledger").splitlines()
    return listing[0].split()[2]


def ci_round(folder: Path) -> float:
    remote = folder / "team.git"
    git(folder, "init", "-q", "--bare", str(remote))
    git(remote, "symbolic-ref", "HEAD", "refs/heads/main")
    files = {
        f"src/pkg{index % N_MODELS:02d}/m{index // 100:03d}/f{index}.py": f"value = {index}\n"
        for index in range(N_FILES)
    }
    spec = "".join(
        f'[models.model{n:02d}]\ntrain = "python train.py"\n'
        f'deps = ["src/pkg{n:02d}", "data/set{n:02d}.csv"]\n\n'
        for n in range(N_MODELS)
    )
    (folder / "ada").mkdir()
    ada = new_repo(folder / "ada" / "repo", remote, spec, files)
    (ada / ".gitignore").write_text("data/\n")
    git(ada, "add", ".gitignore")
    git(ada, "commit", "-q", "-m", "ignore data")
    git(ada, "push", "-q", "origin", "main")
    home = folder / "home-ada"
    for n in range(N_MODELS):
        code = {
            key: value
            for key, value in working_hashes(ada, [f"src/pkg{n:02d}"]).items()
            if value is not None
        }
        add_versions(home, ada, f"model{n:02d}", 1, code)
    command, env = watchkeeper(home)
    subprocess.run([*command, "push"], cwd=ada, env=env, check=True, capture_output=True)
    git(ada, "checkout", "-q", "-b", "feature")
    (ada / "src" / "pkg03" / "m003" / "f303.py").write_text("value = 'changed'\n")
    git(ada, "commit", "-q", "-am", "change one model's code")
    git(ada, "push", "-q", "origin", "feature")
    clone = folder / "ci"
    git(folder, "clone", "-q", "--branch", "feature", str(remote), str(clone))
    command, env = watchkeeper(folder / "ci-home")
    return timed([*command, "ci", "--base", "origin/main"], clone, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    share: list[dict[str, float]] = []
    ci: list[float] = []
    for round_index in range(rounds):
        with tempfile.TemporaryDirectory(prefix="wk-bench-share-") as scratch:
            share.append(push_and_pull_round(Path(scratch)))
        with tempfile.TemporaryDirectory(prefix="wk-bench-ci-") as scratch:
            ci.append(ci_round(Path(scratch)))
        print(f"round {round_index + 1}: {share[-1]} ci={ci[-1]:.2f}s", flush=True)
    median = {key: statistics.median(r[key] for r in share) for key in share[0]}
    ci_median = statistics.median(ci)
    push_ratio = median["push"] / median["git push"]
    pull_ratio = median["pull"] / median["git fetch + checkout"]
    print(
        f"push of {N_VERSIONS} versions: {median['push']:.2f} s; git push of {N_VERSIONS} files:"
        f" {median['git push']:.2f} s; ratio {push_ratio:.2f} (budget {PUSH_BUDGET})"
    )
    print(
        f"pull of {N_VERSIONS} versions: {median['pull']:.2f} s; git fetch + checkout: "
        f"{median['git fetch + checkout']:.2f} s; ratio {pull_ratio:.2f} (budget {PULL_BUDGET})"
    )
    print(
        f"ci, {N_MODELS} models, {N_FILES} files, data absent: {ci_median:.2f} s "
        f"(budget {CI_BUDGET_S} s)"
    )
    failed = push_ratio > PUSH_BUDGET or pull_ratio > PULL_BUDGET or ci_median > CI_BUDGET_S
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
