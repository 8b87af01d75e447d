"""The artifact store: content addressing, verification, and a full disk leaving nothing behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import WatchkeeperError
from agent.ledger.artifacts import ArtifactStore, file_digest
from tests.agent.runs.gitrepo import REPO_ROOT


def test_put_stores_by_content_digest(tmp_path: Path) -> None:
    source = tmp_path / "model.pkl"
    source.write_bytes(b"weights" * 1000)
    store = ArtifactStore(tmp_path / "artifacts")
    digest = store.put(source)
    assert digest == file_digest(source) and digest.startswith("blake3:")
    stored = store.path(digest)
    hex_digest = digest.removeprefix("blake3:")
    assert stored == tmp_path / "artifacts" / hex_digest[:2] / hex_digest[2:]
    assert stored.read_bytes() == source.read_bytes()
    assert store.put(source) == digest
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]


def test_different_content_gives_different_artifacts(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("one")
    second.write_text("two")
    assert store.put(first) != store.put(second)


def test_folders_and_bad_digests_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(WatchkeeperError, match="not a regular file"):
        store.put(tmp_path)
    with pytest.raises(WatchkeeperError, match="not an artifact digest"):
        store.path("blake3:../../etc/passwd")


def test_file_size_limit_during_copy_registers_nothing(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the copy fail with a real EFBIG half way through."""
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * (3 << 20))
    root = tmp_path / "artifacts"
    script = textwrap.dedent(
        """\
        import resource, signal, sys
        from pathlib import Path
        from agent.errors import WatchkeeperError
        from agent.ledger.artifacts import ArtifactStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            ArtifactStore(Path(sys.argv[2])).put(Path(sys.argv[1]))
        except WatchkeeperError as error:
            print(error)
            sys.exit(3)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(source), str(root)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert completed.returncode == 3, completed.stderr
    assert "too large to store" in completed.stdout
    assert "nothing was registered" in completed.stdout
    assert [p for p in root.rglob("*") if p.is_file()] == []
