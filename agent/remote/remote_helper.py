"""The stdlib-only program Watchkeeper runs on a remote with `python3 -c`: cache, runs, fetches.

It is sent as source on every call, so the remote needs nothing installed but Python 3.6+.
Modes (argv[1]):

- ``probe``: print facts about the remote as JSON (python version, blake3, home, free disk).
- ``plan CACHE``: read a JSON manifest line, answer which blobs the cache lacks, then build
  run folders from the cache on request (one JSON line per request).
- ``receive CACHE DEST``: read framed blobs from stdin, write each to a temporary file, check
  its size and checksum (and BLAKE3 when the module exists), then rename it into the cache and
  link it into DEST; an optional materialize line after the end frame builds the rest of DEST.
- ``poll RUNDIR PID START``: report whether a detached run is running, finished or gone.
- ``pack RUNDIR PATH...``: stream files below RUNDIR back, refusing anything that leaves it.
- ``gc CACHE RUNS``: read {"run_dirs": [...], "dry_run": bool}; remove those run folders (each
  directly under RUNS) and the cache blobs no other run folder links; answer what was freed.
  ``plan`` holds the cache's gc lock shared for a whole upload; ``gc`` takes it exclusive
  without waiting, and answers {"busy": true} when an upload holds it.
"""

import contextlib
import fcntl
import json
import os
import shutil
import struct
import sys
import zlib

VERIFIED_MTIME = 1000000007  # set on a cache entry once its content was checked
FRAME = struct.Struct(">32sQI")  # digest, size, links length; links, payload, CRC-32 follow
TRAILER = struct.Struct(">I")
END_DIGEST = b"\0" * 32
CHUNK = 1 << 20

try:
    import blake3
except ImportError:  # the remote's Python need not have it
    blake3 = None  # type: ignore[assignment]


def blob_path(cache, digest):
    # One flat folder: on ext4 and xfs a large folder is cheaper to add to than many small ones.
    return os.path.join(cache, "blobs", digest)


def valid_entry(path, size):
    """An entry is trusted when it is a regular file of the right size marked as checked;
    returns its stat then, else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    regular = (info.st_mode & 0o170000) == 0o100000
    trusted = regular and info.st_size == size and int(info.st_mtime) == VERIFIED_MTIME
    return info if trusted else None


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def probe(folder=None):
    """Facts about this host; free disk is measured in the nearest existing parent of folder."""
    home = os.path.expanduser("~")
    folder = os.path.expanduser(folder or home)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    usage = shutil.disk_usage(folder)
    reply(
        {
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "blake3": blake3 is not None,
            "home": home,
            "free_bytes": usage.free,
            "measured_in": folder,
        }
    )


def plan(cache):
    """`_plan` under the cache's gc lock, held shared so that gc leaves this upload's blobs."""
    os.makedirs(cache, exist_ok=True)
    with cache_lock(cache, fcntl.LOCK_SH):
        _plan(cache)


def cache_lock(cache, operation):
    """The cache's gc lock (an flock, released with its descriptor even on kill -9)."""
    descriptor = os.open(os.path.join(cache, ".gc-lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, operation)
    except OSError:
        os.close(descriptor)
        raise
    return _Closing(descriptor)


class _Closing:
    def __init__(self, descriptor):
        self.descriptor = descriptor

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.descriptor)


def _plan(cache):
    """Answer each {"blobs": {digest: size}} line with the digests the cache lacks, and build
    folders on {"materialize": ...} lines, one JSON reply per line."""
    for line in sys.stdin:
        request = json.loads(line)
        if "blobs" in request:
            reply({"missing": missing_blobs(cache, request["blobs"])})
        elif "materialize" in request:
            try:
                built, absent = materialize(cache, request["materialize"])
                reply({"built": built, "missing": absent})
            except (OSError, ValueError) as error:
                reply({"error": str(error)})
        else:
            break


def missing_blobs(cache, blobs):
    missing = []
    for digest, size in blobs.items():
        path = blob_path(cache, digest)
        if valid_entry(path, size):
            continue
        if os.path.lexists(path):
            os.chmod(path, 0o644)
            os.unlink(path)  # half-written or altered: send it again
        missing.append(digest)
    return missing


def safe_relative(relative):
    parts = relative.split("/")
    if relative.startswith("/") or not relative or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"refusing path {relative!r}: it must stay inside the folder")
    return parts


def materialize(cache, request):
    """Hard-link (or copy) cache blobs into request['dest'] at their relative paths, after
    removing the paths in request['remove'] (files and symlinks only).

    Returns the number of paths made and the digests whose cache entry is missing or damaged
    (such an entry is removed, so that it can be sent again)."""
    dest = request["dest"]
    made = set()  # type: set[str]
    linked, absent = 0, []
    rebuilding = os.path.isdir(dest)  # most paths are then in place already
    for relative in request.get("remove", []):  # placed by the last sync, gone from the tree
        parts = safe_relative(relative)
        path = os.path.join(dest, *parts)
        if not linked_parent(dest, parts) and (os.path.islink(path) or os.path.isfile(path)):
            os.unlink(path)
    for relative, digest, size, executable in request["files"]:
        safe_relative(relative)
        source = blob_path(cache, digest)
        info = valid_entry(source, size)
        if info is None:
            if digest not in absent:
                absent.append(digest)
                missing_blobs(cache, {digest: size})
            continue
        link_into(dest, relative, source, executable, made, info if rebuilding else None)
        linked += 1
    for relative, target in request.get("links", []):
        make_symlink(dest, relative, target)
        linked += 1
    return linked, absent


def make_symlink(dest, relative, target):
    """Recreate a symlink of the tree; its target must stay inside dest."""
    parts = safe_relative(relative)
    resolved = os.path.normpath(os.path.join(os.path.dirname(relative), target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise ValueError(f"refusing link {relative!r} -> {target!r}: it leaves the folder")
    path = os.path.join(dest, *parts)
    make_parents(dest, parts, set())
    if os.path.lexists(path):
        if os.path.islink(path) and os.readlink(path) == target:
            return
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    os.symlink(target, path)


def make_parents(dest, parts, made):
    """Make the folders that lead to dest/parts[-1]. A symlink in place of one of them is
    replaced by a folder, so that nothing is written through it (it could lead out of dest)."""
    path = dest
    if path not in made:
        os.makedirs(path, exist_ok=True)
        made.add(path)
    for part in parts[:-1]:
        path = os.path.join(path, part)
        if path in made:
            continue
        if os.path.islink(path):
            os.unlink(path)
        if not os.path.isdir(path):
            try:
                os.mkdir(path)
            except FileExistsError:  # a receiver beside this one made it just now
                if os.path.islink(path) or not os.path.isdir(path):
                    raise
        made.add(path)


def linked_parent(dest, parts):
    """Whether a folder between dest and dest/parts[-1] is a symlink."""
    path = dest
    for part in parts[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path):
            return True
    return False


def link_into(dest, relative, source, executable, made, source_info=None):
    """Place the cache blob `source` at dest/relative (a hard link, else a copy).

    With the blob's stat (`source_info`), a path already linked to it is seen with one lstat.
    """
    parts = safe_relative(relative)
    target = os.path.join(dest, *parts)
    if source_info is not None:
        try:
            current = os.lstat(target)
        except OSError:
            current = None
        if (
            current is not None
            and current.st_ino == source_info.st_ino
            and current.st_dev == source_info.st_dev
        ):
            return
    make_parents(dest, parts, made)
    try:
        os.link(source, target)
    except FileExistsError:
        try:
            if os.path.samefile(source, target):
                return
        except OSError:
            pass
        temporary = target + ".wk-tmp"
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.link(source, temporary)
        os.replace(temporary, target)
    except OSError:  # another file system, or links not allowed: copy
        temporary = target + ".wk-tmp"
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    if executable:
        os.chmod(target, 0o555)


def make_hasher():
    return blake3.blake3() if blake3 is not None else None


def receive(cache, dest):
    # Each receiver stages in a folder of its own, so parallel receivers do not contend for one
    # directory's lock.
    staging = os.path.join(cache, "tmp", str(os.getpid()))
    os.makedirs(staging, exist_ok=True)
    made = set()  # type: set[str]
    made_in_dest = set()  # type: set[str]
    linked, refused = 0, []
    stream = sys.stdin.buffer
    stored, rejected = 0, []
    while True:
        header = stream.read(FRAME.size)
        if len(header) < FRAME.size:
            break
        raw_digest, size, links_length = FRAME.unpack(header)
        if raw_digest == END_DIGEST:
            break
        links = stream.read(links_length).split(b"\0") if links_length else []
        digest = raw_digest.hex()
        temporary = os.path.join(staging, digest)
        crc, hasher, remaining = 0, make_hasher(), size
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        try:
            while remaining:
                chunk = stream.read(min(CHUNK, remaining))
                if not chunk:
                    break
                crc = zlib.crc32(chunk, crc)
                if hasher is not None:
                    hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(descriptor, view) :]
                remaining -= len(chunk)
            os.utime(descriptor, (VERIFIED_MTIME, VERIFIED_MTIME))
        finally:
            os.close(descriptor)
        trailer = stream.read(TRAILER.size) if not remaining else b""
        good = len(trailer) == TRAILER.size and crc == TRAILER.unpack(trailer)[0]
        if good and hasher is not None:
            good = hasher.hexdigest() == digest
        if not good:
            os.unlink(temporary)
            rejected.append(digest)
            if len(trailer) < TRAILER.size:
                break  # the stream ended early
            continue
        final = blob_path(cache, digest)
        folder = os.path.dirname(final)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        os.replace(temporary, final)
        stored += 1
        for link in links:
            relative, executable = os.fsdecode(link[1:]), link[:1] == b"1"
            try:
                link_into(dest, relative, final, executable, made_in_dest)
                linked += 1
            except ValueError as error:
                refused.append(str(error))
    with contextlib.suppress(OSError):
        os.rmdir(staging)
    result = {
        "stored": stored,
        "rejected": rejected,
        "verified_with": verifier_name(),
        "linked": linked,
        "refused": refused,
    }
    # A {"materialize": ...} line may follow the end frame: build the rest of the tree too.
    line = stream.readline() if header[:32] == END_DIGEST else b""
    if line.strip():
        try:
            result["built"], result["missing"] = materialize(cache, json.loads(line)["materialize"])
        except (OSError, ValueError, KeyError) as error:
            result["error"] = str(error)
    reply(result)


def verifier_name():
    return "blake3" if blake3 is not None else "crc32"


def process_start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return fields[19]


def alive(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    current = process_start_time(pid)
    if current is None:  # a zombie, or a system without /proc
        return not os.path.isdir("/proc/self")
    return start in ("", current)


def read_tail(path, limit=4000):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def poll(rundir, pid, start):
    exit_path = os.path.join(rundir, "exitcode")
    if os.path.exists(exit_path):
        with open(exit_path) as handle:
            text = handle.read().strip()
        reply({"state": "exited", "exit_code": int(text) if text.lstrip("-").isdigit() else None})
        return
    if pid and alive(int(pid), start):
        reply({"state": "running"})
        return
    if os.path.exists(exit_path):  # it finished between the two checks
        poll(rundir, pid, start)
        return
    cancelled = os.path.exists(os.path.join(rundir, "cancelled"))
    reply({"state": "cancelled" if cancelled else "vanished", "tail": read_tail(rundir + "/log")})


def pack(rundir, paths):
    """Stream each requested file below rundir as a JSON header line, its bytes and a CRC."""
    root = os.path.realpath(rundir)
    out = sys.stdout.buffer

    def header(obj):
        out.write((json.dumps(obj) + "\n").encode())

    def send_file(relative, real):
        size = os.path.getsize(real)
        header({"path": relative, "size": size, "mode": os.stat(real).st_mode & 0o777})
        crc = 0
        with open(real, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    break
                crc = zlib.crc32(chunk, crc)
                out.write(chunk)
        out.write(struct.pack(">I", crc))

    def inside(real):
        return real == root or real.startswith(root + os.sep)

    def visit(relative):
        try:
            safe_relative(relative)
        except ValueError as error:
            header({"error": str(error)})
            return
        full = os.path.join(root, relative)
        if not os.path.lexists(full):
            header({"missing": relative})
            return
        real = os.path.realpath(full)
        if not inside(real):
            header({"error": f"refusing {relative}: it points outside the run folder"})
            return
        if os.path.isdir(real):
            for name in sorted(os.listdir(real)):
                visit(relative + "/" + name)
        elif os.path.isfile(real):
            send_file(relative, real)
        else:
            header({"error": f"refusing {relative}: not a regular file"})

    for relative in paths:
        visit(relative)
    header({"end": True})
    out.flush()


def collect(cache, runs):
    """Remove the run folders named on stdin and the cache blobs nothing else links."""
    request = json.loads(sys.stdin.readline() or "{}")
    dry_run = bool(request.get("dry_run"))
    runs = os.path.realpath(runs)
    os.makedirs(cache, exist_ok=True)
    try:
        lock = cache_lock(cache, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        reply({"busy": True, "run_folders": 0, "run_folder_bytes": 0, "blobs": 0, "blob_bytes": 0})
        return
    with lock:
        doomed, folder_bytes = [], 0
        links = {}  # type: dict
        for run_dir in request.get("run_dirs", []):
            real = os.path.realpath(run_dir)
            if os.path.dirname(real) != runs or not os.path.isdir(real):
                continue
            doomed.append(real)
            for base, _, files in os.walk(real):
                for name in files:
                    info = os.lstat(os.path.join(base, name))
                    key = (info.st_dev, info.st_ino)
                    links[key] = links.get(key, 0) + 1
                    if info.st_nlink == 1:
                        folder_bytes += info.st_size
        blobs, blob_bytes = 0, 0
        folder = os.path.join(cache, "blobs")
        entries = list(os.scandir(folder)) if os.path.isdir(folder) else []
        freed = []
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            others = info.st_nlink - 1 - links.get((info.st_dev, info.st_ino), 0)
            if others <= 0 and (info.st_mode & 0o170000) == 0o100000:
                freed.append(entry.path)
                blobs += 1
                blob_bytes += info.st_size
        if not dry_run:
            for real in doomed:
                shutil.rmtree(real, ignore_errors=True)
            for path in freed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    reply(
        {
            "busy": False,
            "run_folders": len(doomed),
            "run_folder_bytes": folder_bytes,
            "blobs": blobs,
            "blob_bytes": blob_bytes,
        }
    )


def main(argv):
    mode = argv[1]
    if mode == "probe":
        probe(argv[2] if len(argv) > 2 else None)
    elif mode == "plan":
        plan(argv[2])
    elif mode == "receive":
        receive(argv[2], argv[3] if len(argv) > 3 else "")
        os._exit(0)  # the reply is out and every file closed: skip the interpreter's teardown
    elif mode == "poll":
        poll(argv[2], argv[3], argv[4])
    elif mode == "pack":
        pack(argv[2], argv[3:])
    elif mode == "gc":
        collect(argv[2], argv[3])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
