"""The run layout: the code snapshot is HEAD plus uncommitted work; run.sh runs and collects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent.project.git import working_tree
from agent.runs.executor import read_exit_code
from agent.runs.layout import new_run_id, prepare_run_dir
from tests.agent.runs.gitrepo import make_repo


def prepare(
    root: Path,
    run_dir: Path,
    command: str,
    data_deps: tuple[str, ...] = (),
    collected: tuple[str, ...] = (),
) -> None:
    prepare_run_dir(
        root=root,
        run_dir=run_dir,
        run_id="churn-test",
        model="churn",
        command=command,
        params={"lr": 0.5},
        tree=working_tree(root),
        data_deps=list(data_deps),
        collected=list(collected),
    )


def test_code_snapshot_holds_head_plus_uncommitted_and_untracked_work(tmp_path: Path) -> None:
    root = make_repo(
        tmp_path,
        files={".gitignore": "secrets.txt\ndata/\n", "old.py": "x = 1\n", "blob.bin": "\0\1"},
    )
    (root / "src" / "helper.py").write_text('MESSAGE = "uncommitted helper"\n')
    (root / "old.py").unlink()
    (root / "blob.bin").write_bytes(bytes(range(256)))
    (root / "new_module.py").write_text("NEW = True\n")
    (root / "secrets.txt").write_text("ignored\n")
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text("a,b\n1,2\n")
    subprocess.run(["git", "-C", str(root), "add", "blob.bin"], check=True)  # staged change too
    run_dir = tmp_path / "runs" / "r1"
    prepare(root, run_dir, "true", data_deps=("data",))
    code = run_dir / "code"
    assert (code / "src" / "helper.py").read_text() == 'MESSAGE = "uncommitted helper"\n'
    assert not (code / "old.py").exists()
    assert (code / "blob.bin").read_bytes() == bytes(range(256))
    assert (code / "new_module.py").read_text() == "NEW = True\n"
    assert not (code / "secrets.txt").exists()
    assert (code / "watchkeeper.toml").is_file()
    assert (run_dir / "data" / "data").resolve() == (root / "data").resolve()
    assert (code / "data" / "train.csv").read_text() == "a,b\n1,2\n"
    assert json.loads((run_dir / "params.json").read_text()) == {"lr": 0.5}
    assert {p.name for p in run_dir.iterdir()} >= {
        "code",
        "data",
        "params.json",
        "run.sh",
        "log",
        "outs",
    }


def test_run_script_sets_the_environment_collects_outs_and_writes_exitcode(
    tmp_path: Path,
) -> None:
    root = make_repo(tmp_path)
    run_dir = tmp_path / "runs" / "r2"
    command = (
        'mkdir -p out && echo "$WK_PARAMS" > out/params_path && cp "$WK_PARAMS" p.json '
        "&& echo to-stderr >&2; exit 3"
    )
    prepare(root, run_dir, command, collected=("out", "p.json", "never-written.bin"))
    subprocess.run(["/bin/sh", str(run_dir / "run.sh")], check=False)
    assert read_exit_code(run_dir) == 3
    assert (run_dir / "outs" / "out" / "params_path").read_text().strip() == str(
        run_dir / "params.json"
    )
    assert json.loads((run_dir / "outs" / "p.json").read_text()) == {"lr": 0.5}
    assert not (run_dir / "outs" / "never-written.bin").exists()
    assert "to-stderr" in (run_dir / "log").read_text()


def test_run_ids_are_unique_and_name_the_model() -> None:
    ids = {new_run_id("churn") for _ in range(50)}
    assert len(ids) == 50
    assert all(run_id.startswith("churn-") for run_id in ids)
