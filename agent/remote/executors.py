"""The ssh and slurm executors: the run layout sent to a remote, started detached, polled, fetched.

Importing this module registers both kinds with `agent.runs.executor`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from agent.config import UserConfig
from agent.data.stat_cache import StatCache
from agent.errors import WatchkeeperError
from agent.paths import WatchkeeperPaths
from agent.remote.config import RemoteConfig
from agent.remote.connection import (
    RemoteSession,
    RemoteUnreachableError,
    SshConnection,
    exit_status,
    quote_command,
    read_stderr_tail,
)
from agent.remote.replies import MAX_HEADER_BYTES, HelperReplyError, one_line, pack_header
from agent.remote.sync import SyncReport, sync_tree
from agent.runs.executor import (
    LOG_FILE,
    MLFLOW_DB_FILE,
    STEP_METRICS_FILE,
    Run,
    RunState,
    read_from,
    register_executor,
)

STATUS_INTERVAL = 1.0  # seconds between two remote status checks of one run
LOG_READ_LIMIT = 4 << 20
COLLECTED = ("outs", "exitcode", "log", "slurm.out", STEP_METRICS_FILE, MLFLOW_DB_FILE)
CRC = struct.Struct(">I")
# Files a run writes: never uploaded (a hard link into the cache must not be written to).
RUN_OUTPUTS = frozenset(
    {"log", "exitcode", "exitcode.tmp", "outs", "pid", "cancelled", "slurm.out"}
    | {STEP_METRICS_FILE, MLFLOW_DB_FILE}
)

SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "STOPPED"}
SLURM_CANCELLED = {"CANCELLED", "REVOKED"}
SLURM_FAILED = {
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
}

# The detached wrapper: remembers its pid (= its process group), runs run.sh, and writes the
# exit status when run.sh could not (killed by a signal, say).
WRAPPER = (
    'echo $$ > pid; sh run.sh >> log 2>&1; code=$?; [ -f exitcode ] || echo "$code" > exitcode'
)


def remote_config_from_settings(name: str | None, settings: dict[str, Any]) -> RemoteConfig:
    """Turn the registry's (name, [remotes.NAME] table) into a RemoteConfig."""
    if not name:
        raise WatchkeeperError("a remote executor needs the name of a configured remote.")
    return RemoteConfig.from_table(name, settings, UserConfig.load().path)


def _safe_parts(relative: str) -> list[str]:
    """The parts of a relative posix path that stays inside its folder, else a ValueError."""
    path = PurePosixPath(relative)
    if path.is_absolute() or not relative or any(p in ("", ".", "..") for p in relative.split("/")):
        raise ValueError(f"refusing {relative!r}: absolute or leaving the run folder")
    if "\0" in relative:
        raise ValueError(f"refusing {relative!r}: a NUL byte in the name")
    return list(path.parts)


def unpack_stream(
    channel: Any, dest: Path, allowed_roots: tuple[str, ...], *, remote_name: str = "(unnamed)"
) -> tuple[list[str], list[str]]:
    """Write the files of a `pack` stream into dest; return (written, refused).

    Every header is checked before use (a hostile server could send anything): a header that
    is not a JSON object, a size that is not an integer from 0 to 1 TiB or more than the local
    disk holds, or a path that is not a string ends the fetch with a HelperReplyError. Absolute
    names, `..`, NUL bytes, names outside `allowed_roots` and names whose folders are symlinks
    are refused, noted and skipped.
    """
    reader = _ChannelReader(channel, remote_name)
    dest = dest.resolve()
    written: list[str] = []
    refused: list[str] = []
    while True:
        header = pack_header(remote_name, reader.readline())
        if header.get("end"):
            return written, refused
        if "error" in header:
            refused.append(one_line(header["error"]))
            continue
        if "missing" in header:
            continue
        relative, size = header["path"], header["size"]
        _check_room(remote_name, dest, relative, size)
        try:
            parts = _safe_parts(relative)
            if parts[0] not in allowed_roots:
                raise ValueError(f"refusing {relative!r}: not one of {', '.join(allowed_roots)}")
            target = dest.joinpath(*parts)
            _check_inside(dest, target)
            target.parent.mkdir(parents=True, exist_ok=True)
            _check_inside(dest, target)
        except ValueError as error:
            reader.skip(size + CRC.size)
            refused.append(str(error))
            continue
        except OSError as error:  # a local problem: name it, do not retry the connection
            raise WatchkeeperError(f"{target}: cannot be written ({error.strerror}).") from error
        if _receive_file(reader, target, size):
            written.append(relative)
        else:
            refused.append(f"refusing {relative!r}: a link or folder is in the way locally")


def _receive_file(reader: _ChannelReader, target: Path, size: int) -> bool:
    """Stream one file of a pack stream to target through a temporary file, checking its CRC."""
    partial = target.with_name(target.name + ".wk-part")
    try:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        crc, remaining = 0, size
        with os.fdopen(fd, "wb") as handle:
            while remaining > 0:
                chunk = reader.read_some(min(remaining, 1 << 20))
                crc = zlib.crc32(chunk, crc)
                handle.write(chunk)
                remaining -= len(chunk)
        (expected,) = CRC.unpack(reader.read_exact(CRC.size))
        if crc != expected:
            partial.unlink()
            raise RemoteUnreachableError(
                f"remote {reader.remote_name}: {target.name} was damaged in transfer"
            )
        if target.is_symlink() or target.is_dir():
            partial.unlink()
            return False
        os.replace(partial, target)
        return True
    except TimeoutError:  # a stall: the caller retries on a new connection
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise WatchkeeperError(f"{target}: cannot be written ({error.strerror}).") from error


def _check_room(remote_name: str, dest: Path, relative: str, size: int) -> None:
    """Refuse a file larger than the free space where it would be written."""
    free = shutil.disk_usage(dest).free
    if size > free:
        raise HelperReplyError(
            f"remote {remote_name}: the helper announced {relative!r} with {size} bytes, more "
            f"than the {free} bytes free in {dest}; free some space and fetch again."
        )


def _check_inside(root: Path, target: Path) -> None:
    """Refuse a target whose existing parent folders lead out of root (symlinks included)."""
    probe = target.parent
    while not probe.exists() and probe != root:
        probe = probe.parent
    resolved = probe.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"refusing {target}: it would be written outside {root}")


class _ChannelReader:
    """Buffered reads of exact sizes and bounded lines from a paramiko channel.

    A read that waits longer than the channel's timeout raises TimeoutError (a stall).
    """

    def __init__(self, channel: Any, remote_name: str = "(unnamed)") -> None:
        self.channel = channel
        self.remote_name = remote_name
        self.buffer = bytearray()

    def _fill(self) -> bool:
        chunk = self.channel.recv(1 << 20)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def ended_early(self) -> Exception:
        """The error for a stream that stopped: lost connection, or the remote program failed."""
        name = self.remote_name
        transport = getattr(self.channel, "get_transport", lambda: None)()
        if transport is None or not transport.is_active():
            return RemoteUnreachableError(f"remote {name}: the file stream ended early")
        status = exit_status(self.channel)
        if status == 127:
            return WatchkeeperError(
                f"remote {name}: fetching results: the remote python was not found (exit 127)"
            )
        errors = read_stderr_tail(self.channel).decode(errors="replace").strip().splitlines()
        return HelperReplyError(
            f"remote {name}: the helper ended the pack stream before its end marker (exit "
            f"{'unknown' if status is None else status})"
            + (f": {errors[-1][-300:]}" if errors else "")
        )

    def readline(self) -> bytes:
        """One line without its newline; at most MAX_HEADER_BYTES, else a HelperReplyError."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise HelperReplyError(
                    f"remote {self.remote_name}: the helper sent a pack header longer than "
                    f"{MAX_HEADER_BYTES >> 10} KiB; expected one short JSON line"
                )
            if not self._fill():
                raise self.ended_early()
        line, _, rest = bytes(self.buffer).partition(b"\n")
        if len(line) > MAX_HEADER_BYTES:
            raise HelperReplyError(
                f"remote {self.remote_name}: the helper sent a pack header longer than "
                f"{MAX_HEADER_BYTES >> 10} KiB; expected one short JSON line"
            )
        self.buffer = bytearray(rest)
        return line

    def read_some(self, limit: int) -> bytes:
        """Up to limit bytes (at least one, limit > 0); the stream ending here is an error."""
        if limit <= 0:
            raise ValueError(f"read_some needs a positive limit, not {limit}")
        if not self.buffer and not self._fill():
            raise self.ended_early()
        data = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            size -= len(self.read_some(min(size, 1 << 20)))

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise self.ended_early()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class RemoteExecutor:
    """What ssh and slurm share: upload, remote run folder, log by offset, fetching results."""

    kind = "remote"

    def __init__(
        self,
        remote: RemoteConfig,
        *,
        session: RemoteSession | None = None,
        digest_cache: StatCache | None = None,
    ) -> None:
        self.remote = remote
        self.session = session or RemoteSession(remote)
        self.digest_cache = digest_cache
        self.last_sync: SyncReport | None = None
        self._last_status: dict[str, tuple[float, RunState]] = {}

    # -- layout -----------------------------------------------------------------------------
    def remote_run_dir(self, run: Run) -> str:
        known = run.detail.get("remote_run_dir")
        if known:
            return str(known)
        return f"{self.session.runs_dir}/{run.id}"

    def upload(self, run: Run) -> str:
        """Check the python, send the local run folder through the cache, return its remote path."""
        self.session.require_python()
        remote_dir = self.remote_run_dir(run)
        cache = self.digest_cache or StatCache.open(WatchkeeperPaths.from_environment())
        try:
            self.last_sync = sync_tree(
                self.session, run.run_dir, remote_dir, hash_cache=cache, exclude=RUN_OUTPUTS
            )
        finally:
            if self.digest_cache is None:
                cache.close()
        run.detail["remote_run_dir"] = remote_dir
        run.detail["upload"] = {
            "files": self.last_sync.files,
            "blobs_sent": self.last_sync.blobs_sent,
            "bytes_sent": self.last_sync.blob_bytes_sent,
            "transport": self.last_sync.bulk_transport or "nothing sent",
        }
        run.host = self.session.target.hostname
        return remote_dir

    def _python_shim(self, remote_dir: str) -> str:
        """Shell lines that make `python` in the run mean the remote's configured python."""
        shim = f'#!/bin/sh\nexec {quote_command(self.session.python_argv)} "$@"\n'
        bin_dir = f"{remote_dir}/.wk-bin"
        return (
            f"mkdir -p {quote_command([bin_dir])} && "
            f"printf '%s' {quote_command([shim])} > {quote_command([bin_dir + '/python'])} && "
            f"chmod 755 {quote_command([bin_dir + '/python'])}"
        )

    def environment(self, remote_dir: str) -> str:
        quoted = quote_command([remote_dir])
        bin_dir = quote_command([remote_dir + "/.wk-bin"])
        return (
            f"WK_RUN_DIR={quoted} WK_PARAMS={quoted}/params.json "
            f'WK_METRICS={quoted}/{STEP_METRICS_FILE} PATH={bin_dir}:"$PATH"'
        )

    # -- log ----------------------------------------------------------------------------------
    def read_log(self, run: Run, offset: int) -> bytes:
        """Remote log bytes from offset (mirrored into the local log, so the tail is at hand)."""
        return self._read_mirrored(run, LOG_FILE, offset)

    def read_steps(self, run: Run, offset: int) -> bytes:
        """Remote `$WK_METRICS` bytes from offset, mirrored into the local run folder."""
        return self._read_mirrored(run, STEP_METRICS_FILE, offset)

    def _read_mirrored(self, run: Run, name: str, offset: int) -> bytes:
        local = run.run_dir / name
        if "collected" in run.detail or "remote_run_dir" not in run.detail:
            return read_from(local, offset)  # fetched in full, or it never reached the remote
        path = f"{self.remote_run_dir(run)}/{name}"

        def read(connection: SshConnection) -> bytes:
            sftp = connection.sftp()
            try:
                with sftp.open(path, "rb") as handle:
                    handle.seek(offset)
                    return bytes(handle.read(LOG_READ_LIMIT))
            except FileNotFoundError:
                return b""

        what = "reading the log" if name == LOG_FILE else "reading the step metrics"
        chunk = self.session.call(read, what=what)
        if chunk:
            self._mirror(local, offset, chunk)
        return chunk

    def _mirror(self, local: Path, offset: int, chunk: bytes) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "r+b" if local.exists() else "wb") as handle:
            handle.seek(offset)
            handle.write(chunk)
            handle.truncate()

    # -- results ------------------------------------------------------------------------------
    def collect(self, run: Run, dest: Path) -> None:
        """Fetch outs/, exitcode and log into dest; refused entries are noted in the log."""
        if "remote_run_dir" not in run.detail:
            return  # it never reached the remote: nothing to fetch
        remote_dir = self.remote_run_dir(run)
        command = self.session.helper_command("pack", remote_dir, *COLLECTED)

        def fetch(connection: SshConnection) -> tuple[list[str], list[str]]:
            channel = connection.channel(command)
            channel.shutdown_write()
            try:
                return unpack_stream(channel, dest, COLLECTED, remote_name=self.remote.name)
            finally:
                channel.close()

        dest.mkdir(parents=True, exist_ok=True)
        written, refused = self.session.call(fetch, what="fetching the results")
        run.detail["collected"] = len(written)
        if refused:
            run.detail["refused_outs"] = refused
            with open(dest / "log", "ab") as handle:
                for reason in refused:
                    handle.write(f"watchkeeper: {reason}\n".encode())

    def _throttled(self, run: Run) -> RunState | None:
        last = self._last_status.get(run.id)
        if last and time.monotonic() - last[0] < STATUS_INTERVAL and not last[1].is_final:
            return last[1]
        return None

    def _remember(self, run: Run, state: RunState) -> RunState:
        self._last_status[run.id] = (time.monotonic(), state)
        return state

    def _helper_poll(self, run: Run, pid: str, start: str) -> dict[str, Any]:
        return dict(self.session.helper_json("poll", self.remote_run_dir(run), pid, start))

    def _mark_lost(self, run: Run, tail: str) -> RunState:
        run.detail["problem"] = (
            "the remote process vanished without writing an exit code; last log lines:\n"
            + "\n".join(tail.splitlines()[-20:])
        )
        return RunState.LOST


class SshExecutor(RemoteExecutor):
    """Runs the layout on a host over SSH, detached with setsid nohup so it outlives the link."""

    kind = "ssh"

    def start(self, run: Run) -> None:
        remote_dir = self.upload(run)
        quoted = quote_command([remote_dir])
        script = (
            f"cd {quoted} && rm -f exitcode pid cancelled && {self._python_shim(remote_dir)} && "
            f"( {self.environment(remote_dir)} setsid nohup sh -c {quote_command([WRAPPER])} "
            "> /dev/null 2>&1 < /dev/null & ) && "
            "i=0; while [ ! -s pid ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
            'pid=$(cat pid); echo "$pid"; '
            "sed 's/.*) //' /proc/$pid/stat 2>/dev/null | cut -d' ' -f20"
        )
        result = self.session.run(script).check(f"starting run {run.id} on {self.remote.name}")
        lines = result.text.split()
        if not lines or not lines[0].isdigit():
            raise WatchkeeperError(f"run {run.id} did not start on {self.remote.name}: no pid")
        run.pid = int(lines[0])
        run.remote_job_id = lines[0]
        run.detail["pid_start_ticks"] = lines[1] if len(lines) > 1 else ""

    def poll(self, run: Run) -> RunState:
        cached = self._throttled(run)
        if cached is not None:
            return cached
        status = self._helper_poll(
            run, str(run.pid or ""), str(run.detail.get("pid_start_ticks") or "")
        )
        state = status["state"]
        if state == "running":
            return self._remember(run, RunState.RUNNING)
        if state == "exited":
            code = status.get("exit_code")
            return self._remember(run, RunState.SUCCEEDED if code == 0 else RunState.FAILED)
        if state == "cancelled":
            return self._remember(run, RunState.CANCELLED)
        return self._remember(run, self._mark_lost(run, str(status.get("tail", ""))))

    def cancel(self, run: Run) -> None:
        """Kill the run's process group (TERM, then KILL after a grace period)."""
        run.detail["cancelled"] = True
        if run.pid is None:
            return
        group = str(run.pid)
        quoted = quote_command([self.remote_run_dir(run)])
        script = (
            f"cd {quoted} && touch cancelled && "
            f'if [ -f pid ] && [ "$(cat pid)" = {group} ]; then '
            f"kill -TERM -- -{group} 2>/dev/null; i=0; "
            f"while kill -0 -- -{group} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); "
            f"done; kill -KILL -- -{group} 2>/dev/null; fi; true"
        )
        self.session.run(script)
        self._last_status.pop(run.id, None)


SLURM_RESOURCE_FLAGS = {
    "cpus": "--cpus-per-task",
    "memory": "--mem",
    "time": "--time",
    "partition": "--partition",
}


def sbatch_options(remote: RemoteConfig, resources: dict[str, Any]) -> list[str]:
    """sbatch flags from the remote (partition, extra args) and `[models.X.resources]`.

    >>> sbatch_options(RemoteConfig("c", "h", kind="slurm"), {"cpus": 2, "memory": "4G"})
    ['--cpus-per-task=2', '--mem=4G']
    """
    options: list[str] = []
    if remote.partition and "partition" not in resources:
        options.append(f"--partition={remote.partition}")
    for key, value in resources.items():
        if key == "gpus":
            if int(value) > 0:
                options.append(f"--gres=gpu:{int(value)}")
        elif key == "gres":
            options.append(f"--gres={value}")
        elif key in SLURM_RESOURCE_FLAGS:
            options.append(f"{SLURM_RESOURCE_FLAGS[key]}={value}")
        else:
            raise WatchkeeperError(
                f"[resources] key {key!r} has no Slurm equivalent; use cpus, gpus, memory, "
                "time or partition."
            )
    options.extend(remote.sbatch_args)
    return options


def run_state_for_slurm(state: str) -> RunState | None:
    """Our run state for a Slurm job state; None when the exitcode file decides (COMPLETED)."""
    if state in SLURM_QUEUED:
        return RunState.QUEUED
    if state in SLURM_RUNNING:
        return RunState.RUNNING
    if state in SLURM_CANCELLED or state.startswith("CANCELLED"):
        return RunState.CANCELLED
    if state in SLURM_FAILED:
        return RunState.FAILED
    return None


def parse_scontrol(text: str) -> dict[str, str]:
    """`scontrol show job` output as a dict of its Key=Value fields."""
    fields: dict[str, str] = {}
    for match in re.finditer(r"(\w+(?::\w+)?)=(\S*)", text):
        fields.setdefault(match.group(1), match.group(2))
    return fields


class SlurmExecutor(RemoteExecutor):
    """Submits the layout with sbatch over SSH; squeue, then scontrol, tell its state."""

    kind = "slurm"

    def __init__(self, remote: RemoteConfig, **kwargs: Any) -> None:
        super().__init__(remote, **kwargs)
        self._array_states: dict[str, tuple[float, dict[str, tuple[str, str]]]] = {}

    def start(self, run: Run) -> None:
        remote_dir = self.upload(run)
        resources = self._resources(run)
        batch = (
            "#!/bin/sh\n"
            f"cd {quote_command([remote_dir])} || exit 127\n"
            f"export {self.environment(remote_dir)}\n"
            'sh run.sh >> log 2>&1\ncode=$?\n[ -f exitcode ] || echo "$code" > exitcode\n'
            'exit "$code"\n'
        )
        batch_path = f"{remote_dir}/slurm-batch.sh"
        sbatch = [
            "sbatch",
            "--parsable",
            f"--job-name=wk-{run.id}",
            f"--chdir={remote_dir}",
            f"--output={remote_dir}/slurm.out",
            *sbatch_options(self.remote, resources),
            batch_path,
        ]
        script = (
            f"cd {quote_command([remote_dir])} && rm -f exitcode cancelled && "
            f"{self._python_shim(remote_dir)} && "
            f"printf '%s' {quote_command([batch])} > slurm-batch.sh && "
            f"{quote_command(sbatch)}"
        )
        result = self.session.run(script)
        if result.exit_code != 0:
            raise WatchkeeperError(
                f"sbatch on {self.remote.name} refused run {run.id}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        job_id = result.text.strip().splitlines()[-1].split(";")[0]
        if not job_id.isdigit():
            raise WatchkeeperError(f"sbatch on {self.remote.name} answered {result.text!r}")
        run.remote_job_id = job_id
        run.detail["slurm_options"] = sbatch_options(self.remote, resources)

    def _resources(self, run: Run) -> dict[str, Any]:
        if "resources" in run.detail:
            return dict(run.detail["resources"])
        repo, model = run.detail.get("repo"), run.detail.get("model")
        if not repo or not model:
            return {}
        from agent.project.spec import load_project

        return dict(load_project(Path(repo)).model(str(model)).resources)

    def start_array(self, runs: list[Run], parallel: int | None, sweep_id: str) -> str:
        """Submit staged runs as one job array (`sbatch --array=0-K%N`), task i running
        runs[i]; fills in each run's host and job id `JOBID_i`; returns the array's job id.

        Each run folder is uploaded as for a single run; the array script, in the sweep's
        folder on the remote, sends each task into its own run folder.
        """
        remote_dirs = [self.upload(run) for run in runs]
        sweep_dir = f"{self.session.runs_dir}/{sweep_id}"
        resources = self._resources(runs[0])
        cases = "".join(
            f"{index}) cd {quote_command([path])} || exit 127 ;;\n"
            for index, path in enumerate(remote_dirs)
        )
        batch = (
            '#!/bin/sh\ncase "$SLURM_ARRAY_TASK_ID" in\n'
            f"{cases}*) echo 'no run for task '\"$SLURM_ARRAY_TASK_ID\"; exit 127 ;;\nesac\n"
            f"rm -f exitcode cancelled && {self._python_shim('.')} || exit 127\n"
            'export WK_RUN_DIR="$PWD" WK_PARAMS="$PWD/params.json" '
            f'WK_METRICS="$PWD/{STEP_METRICS_FILE}" PATH="$PWD/.wk-bin:$PATH"\n'
            'sh run.sh >> log 2>&1\ncode=$?\n[ -f exitcode ] || echo "$code" > exitcode\n'
            'exit "$code"\n'
        )
        limit = f"%{parallel}" if parallel else ""
        options = sbatch_options(self.remote, resources)
        sbatch = [
            "sbatch",
            "--parsable",
            f"--array=0-{len(runs) - 1}{limit}",
            f"--job-name=wk-{sweep_id}",
            f"--chdir={sweep_dir}",
            f"--output={sweep_dir}/slurm-%a.out",
            *options,
            f"{sweep_dir}/array.sh",
        ]
        quoted_dir = quote_command([sweep_dir])
        script = f"mkdir -p {quoted_dir} && cat > {quoted_dir}/array.sh && {quote_command(sbatch)}"
        result = self.session.run(script, stdin=batch.encode())
        if result.exit_code != 0:
            raise WatchkeeperError(
                f"sbatch on {self.remote.name} refused sweep {sweep_id} ({len(runs)} tasks): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        job_id = result.text.strip().splitlines()[-1].split(";")[0]
        if not job_id.isdigit():
            raise WatchkeeperError(f"sbatch on {self.remote.name} answered {result.text!r}")
        for index, run in enumerate(runs):
            run.remote_job_id = f"{job_id}_{index}"
            run.detail.update(array_job_id=job_id, array_task=index, slurm_options=options)
        return job_id

    def cancel_array(self, job_id: str) -> None:
        """`scancel` a whole job array: every task, pending or running."""
        self.session.run(["scancel", str(job_id)])
        self._array_states.pop(str(job_id), None)

    def _array_state(self, job_id: str, task: str) -> tuple[str, str] | None:
        """A task's (state, reason) from one `squeue` of its whole array (at most one call a
        STATUS_INTERVAL for all tasks); None when squeue no longer lists it."""
        known = self._array_states.get(job_id)
        if known is None or time.monotonic() - known[0] >= STATUS_INTERVAL:
            queue = self.session.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i|%T|%r"])
            states: dict[str, tuple[str, str]] = {}
            if queue.exit_code == 0:
                for line in queue.text.splitlines():
                    task_id, _, rest = line.strip().partition("|")
                    state, _, reason = rest.partition("|")
                    states[task_id] = (state, reason)
            known = self._array_states[job_id] = (time.monotonic(), states)
        return known[1].get(task)

    def slurm_state(self, run: Run) -> tuple[str, str, str]:
        """(state, reason, exit code) as Slurm names them; state '' when Slurm forgot the job."""
        job = str(run.remote_job_id)
        array_job = run.detail.get("array_job_id")
        listed = self._array_state(str(array_job), job) if array_job else None
        if listed is not None:
            return listed[0], listed[1], ""
        queue = self.session.run(["squeue", "-h", "-j", job, "-o", "%T|%r"])
        line = queue.text.strip()
        if queue.exit_code == 0 and line:
            state, _, reason = line.partition("|")
            return state, reason, ""
        shown = self.session.run(["scontrol", "show", "job", job])
        if shown.exit_code == 0:
            fields = parse_scontrol(shown.text)
            return fields.get("JobState", ""), fields.get("Reason", ""), fields.get("ExitCode", "")
        return "", "", ""

    def poll(self, run: Run) -> RunState:
        cached = self._throttled(run)
        if cached is not None:
            return cached
        state, reason, _exit_code = self.slurm_state(run)
        run.detail["slurm_state"] = state
        run.detail["slurm_reason"] = reason if reason not in ("None", "(null)") else ""
        mapped = run_state_for_slurm(state)
        if mapped in (RunState.QUEUED, RunState.RUNNING, RunState.CANCELLED):
            return self._remember(run, mapped)
        files = self._helper_poll(run, "", "")
        if mapped is RunState.FAILED:
            run.detail["problem"] = f"Slurm job {run.remote_job_id} ended {state}" + (
                f" ({run.detail['slurm_reason']})" if run.detail["slurm_reason"] else ""
            )
            return self._remember(run, RunState.FAILED)
        if files["state"] == "exited":
            code = files.get("exit_code")
            return self._remember(run, RunState.SUCCEEDED if code == 0 else RunState.FAILED)
        if state == "COMPLETED":
            run.detail["problem"] = f"Slurm job {run.remote_job_id} COMPLETED without an exitcode"
            return self._remember(run, RunState.FAILED)
        return self._remember(run, self._mark_lost(run, str(files.get("tail", ""))))

    def describe(self, run: Run) -> str:
        """The Slurm state as Slurm shows it, e.g. `PENDING (Resources)`."""
        state = run.detail.get("slurm_state") or "unknown"
        reason = run.detail.get("slurm_reason")
        return f"{state} ({reason})" if reason else str(state)

    def cancel(self, run: Run) -> None:
        run.detail["cancelled"] = True
        if run.remote_job_id:
            self.session.run(["scancel", str(run.remote_job_id)])
        self._last_status.pop(run.id, None)


_sessions: dict[RemoteConfig, RemoteSession] = {}
_sessions_lock = threading.Lock()


def shared_session(remote: RemoteConfig) -> RemoteSession:
    """One reconnecting session per remote configuration, shared by the executors of a process
    (a poller that builds an executor per round then reuses the connection)."""
    with _sessions_lock:
        session = _sessions.get(remote)
        if session is None:
            session = _sessions[remote] = RemoteSession(remote)
        return session


def ssh_executor(name: str | None, settings: dict[str, Any]) -> SshExecutor:
    """Registry factory for remotes of kind ssh."""
    remote = remote_config_from_settings(name, settings)
    return SshExecutor(remote, session=shared_session(remote))


def slurm_executor(name: str | None, settings: dict[str, Any]) -> SlurmExecutor:
    """Registry factory for remotes of kind slurm."""
    remote = remote_config_from_settings(name, settings)
    return SlurmExecutor(remote, session=shared_session(remote))


register_executor("ssh", ssh_executor)
register_executor("slurm", slurm_executor)

__all__ = [
    "RemoteExecutor",
    "SlurmExecutor",
    "SshExecutor",
    "unpack_stream",
]
