"""Test helpers: real git repos in tmp folders with small real training scripts, and the CLI."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

PYTHON = shlex.quote(sys.executable)
REPO_ROOT = Path(__file__).resolve().parents[3]

TRAIN_SCRIPT = textwrap.dedent(
    """\
    import json, os, pathlib, sys
    params = json.load(open(os.environ["WK_PARAMS"]))
    print("run dir", os.environ["WK_RUN_DIR"], flush=True)
    print("training with", json.dumps(params, sort_keys=True), flush=True)
    from src.helper import MESSAGE
    print("helper says", MESSAGE, flush=True)
    pathlib.Path("model.pkl").write_text("weights lr=%s" % params["lr"])
    json.dump({"auc": 0.91, "loss": params["lr"] * 2}, open("metrics.json", "w"))
    """
)

SPEC = textwrap.dedent(
    f"""\
    [models.churn]
    train = "{PYTHON} train.py"
    deps = ["train.py", "src/"]
    outs = ["model.pkl"]
    metrics = "metrics.json"
    params = {{ lr = 0.01, epochs = 5 }}
    params_env = true
    """
)


def git(root: Path, *args: str) -> str:
    """Run git in the repo and return stdout."""
    completed = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    )
    return completed.stdout


def make_repo(
    folder: Path,
    files: dict[str, str] | None = None,
    spec: str = SPEC,
    commit: bool = True,
) -> Path:
    """A git repo with a train script, a helper module, the spec and `files`, committed."""
    root = folder / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    contents = {
        "train.py": TRAIN_SCRIPT,
        "src/__init__.py": "",
        "src/helper.py": 'MESSAGE = "committed helper"\n',
        "watchkeeper.toml": spec,
        **(files or {}),
    }
    for name, text in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if commit:
        commit_all(root, "initial")
    return root


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout importable, WATCHKEEPER_HOME kept."""
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def run_cli(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `watchkeeper ARGS` in `root` as a real process."""
    return subprocess.run(
        cli_command(*args),
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
