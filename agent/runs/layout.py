"""Build a run directory: code snapshot, linked data, params.json and run.sh."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from agent.errors import WatchkeeperError
from agent.paths import make_tree_private
from agent.project.git import GitError, WorkingTree, git

RUN_SCRIPT = """\
#!/bin/sh
# Watchkeeper run {run_id} of model {model}: runs the train command in code/, places the
# declared outs and metrics in outs/, then writes the exit status to exitcode.
RUN_DIR="${{WK_RUN_DIR:-$(cd "$(dirname "$0")" && pwd -P)}}"
export WK_RUN_DIR="$RUN_DIR"
export WK_PARAMS="$RUN_DIR/params.json"
export WK_METRICS="$RUN_DIR/steps.jsonl"
exec >>"$RUN_DIR/log" 2>&1 </dev/null
mkdir -p "$RUN_DIR/outs"
{exports}{mlflow}cd "$RUN_DIR/code" || exit 127
/bin/sh -c {command}
status=$?
CODE_DIR=$(pwd -P)
OUTS_DIR=$(cd "$RUN_DIR/outs" && pwd -P)

# place SOURCE DEST: hard links where the file system allows them, else copies. Symlinks are
# copied as symlinks, never followed (settle decides about them).
place() {{
    cp -RPl -- "$1" "$2" 2>/dev/null || {{ rm -rf -- "$2"; cp -RP -- "$1" "$2"; }}
}}

# settle COPY ORIGINAL: each symlink below COPY is replaced by what the same path below
# ORIGINAL leads to, when that lies inside code/ or outs/; any other link is removed, unread,
# and noted in the log.
settle() {{
    round=0
    while [ "$round" -lt 20 ] && links=$(find "$1" -type l) && [ -n "$links" ]; do
        round=$((round + 1))
        printf '%s\\n' "$links" | while IFS= read -r link; do
            real=$(realpath -- "$2${{link#"$1"}}" 2>/dev/null) || real=""
            rm -f -- "$link"
            case "$real" in
            "$CODE_DIR"/* | "$OUTS_DIR"/*) place "$real" "$link" ;;
            *)
                echo "watchkeeper: refusing out ${{link#"$OUTS_DIR"/}}:" \\
                    "a symlink leading out of code/ (to ${{real:-nowhere}})"
                ;;
            esac
        done
    done
    if [ -n "$(find "$1" -type l)" ]; then
        echo "watchkeeper: refusing out ${{1#"$OUTS_DIR"/}}: symlinks nested too deep"
        find "$1" -type l -exec rm -f -- {{}} +
    fi
}}

for out in {outs}; do
    if [ -e "$out" ] || [ -L "$out" ]; then
        mkdir -p "$OUTS_DIR/$(dirname "$out")"
        rm -rf -- "$OUTS_DIR/$out"
        place "$out" "$OUTS_DIR/$out"
        settle "$OUTS_DIR/$out" "$CODE_DIR/$out"
    fi
done
settle "$OUTS_DIR" "$OUTS_DIR"
printf '%s\\n' "$status" > "$RUN_DIR/exitcode.tmp"
mv "$RUN_DIR/exitcode.tmp" "$RUN_DIR/exitcode"
exit "$status"
"""


def new_run_id(model: str) -> str:
    """A unique, sortable run id such as `churn-20260101-120000-3fa9c2`."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{model}-{stamp}-{secrets.token_hex(3)}"


def write_code_snapshot(root: Path, tree: WorkingTree, code_dir: Path) -> None:
    """HEAD's files checked out into code_dir, the uncommitted diff applied, untracked files
    copied.

    git itself writes the files (`checkout-index` from a scratch index), so a tree of 10,000
    files takes a fraction of a second and no path leads out of code_dir.
    """
    code_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="wk-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        try:
            git(root, "read-tree", tree.commit, env=env)
            git(root, "checkout-index", "--all", f"--prefix={code_dir}/", env=env)
        except GitError as error:
            raise WatchkeeperError(
                f"cannot write the code of {tree.commit} to {code_dir}: {error}"
            ) from error
    if tree.patch:
        completed = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "--binary", "-"],
            input=tree.patch,
            cwd=code_dir,
            capture_output=True,
            env={**os.environ, "GIT_CEILING_DIRECTORIES": str(code_dir.parent)},
            check=False,
        )
        if completed.returncode != 0:
            raise WatchkeeperError(
                f"cannot apply the uncommitted changes of {root} to the code snapshot in "
                f"{code_dir}: {completed.stderr.decode(errors='replace').strip()}. Commit or "
                "stash them and train again."
            )
    for name in tree.untracked:
        source = root / name
        target = code_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)


def write_code_files(code_dir: Path, files: dict[str, bytes]) -> None:
    """Write files into the working copy, replacing what is there; never through a symlink."""
    real_code_dir = code_dir.resolve()
    for name, content in files.items():
        target = code_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(real_code_dir):
            raise WatchkeeperError(
                f"cannot write {name} into the run's working copy: a folder on its path is a "
                "symlink leading out of the repo; remove the link or choose another params_file."
            )
        if target.is_symlink() or target.is_file():
            target.unlink()
        target.write_bytes(content)


def link_data_deps(
    root: Path, run_dir: Path, data_deps: list[str], *, code_is_root: bool = False
) -> dict[str, str]:
    """Link each data dep into `data/` and make `code/DEP` point there; returns dep -> source.

    When `code/` is `root` itself (`code_is_root`), `code/DEP` is the source and stays.
    """
    data_dir = run_dir / "data"
    data_dir.mkdir(exist_ok=True)
    sources: dict[str, str] = {}
    for dep in data_deps:
        source = (root / dep).resolve()
        link = data_dir / dep
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
        sources[dep] = str(source)
        if code_is_root:
            continue
        in_code = run_dir / "code" / dep
        in_code.parent.mkdir(parents=True, exist_ok=True)
        if in_code.is_symlink() or in_code.is_file():
            in_code.unlink()
        elif in_code.is_dir():
            shutil.rmtree(in_code)
        in_code.symlink_to(os.path.relpath(link, in_code.parent))
    return sources


def write_run_script(
    run_dir: Path,
    run_id: str,
    model: str,
    command: str,
    collected: list[str],
    env: dict[str, str] | None = None,
    mlflow_setup: str = "",
) -> Path:
    """Write run.sh (see RUN_SCRIPT) for the train command, its env and the paths to collect.

    `mlflow_setup` is shell run before the command (see agent.interop.mlflow_capture)."""
    script = run_dir / "run.sh"
    outs = " ".join(shlex.quote(path) for path in collected) or "''"
    exports = "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in (env or {}).items()
    )
    script.write_text(
        RUN_SCRIPT.format(
            run_id=run_id,
            model=model,
            command=shlex.quote(command),
            outs=outs,
            exports=exports,
            mlflow=mlflow_setup,
        )
    )
    script.chmod(0o700)
    return script


def prepare_run_dir(
    *,
    root: Path,
    run_dir: Path,
    run_id: str,
    model: str,
    command: str,
    params: dict[str, Any],
    tree: WorkingTree,
    data_deps: list[str],
    collected: list[str],
    env: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    mlflow_setup: str = "",
    code_folder: Path | None = None,
) -> dict[str, str]:
    """Create the full run layout; returns the data dep sources (dep -> absolute path).

    `env` is exported by run.sh; `files` (repo-relative path -> bytes, such as the params
    file) are written into the working copy `code/` before the command starts. With
    `code_folder` (`root` when given: a reproduction's private worktree, which already holds
    the code and the data at their paths) `code/` is a link to it instead of a snapshot.
    """
    run_dir.mkdir(parents=True)
    if code_folder is None:
        write_code_snapshot(root, tree, run_dir / "code")
    else:
        (run_dir / "code").symlink_to(code_folder.resolve())
    write_code_files(run_dir / "code", files or {})
    sources = link_data_deps(root, run_dir, data_deps, code_is_root=code_folder is not None)
    (run_dir / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    (run_dir / "outs").mkdir()
    (run_dir / "log").touch()
    write_run_script(run_dir, run_id, model, command, collected, env, mlflow_setup)
    make_tree_private(run_dir)  # the code and params are the user's alone, as the ledger is
    return sources
