"""Stands in for a remote's python: runs the real one, except for the helper mode under attack.

Called as `hostile_python.py PLAN_FILE ARGS...` by a wrapper script that the remote's `python`
setting names. PLAN_FILE holds {"mode": "pack", "action": "negative_size"}: when the helper is
run in that mode (`python -c SOURCE MODE ...`), the action is played instead of the helper.
Every other call (other helper modes, the train command) goes to the real python unchanged.
The pid of each hostile process is appended to PLAN_FILE.pids so that tests can end them.
"""

import json
import os
import sys
import time

REAL_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
STALL_SECONDS = 120


def header(obj):
    return (json.dumps(obj) + "\n").encode()


def write(data):
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        os._exit(0)


def stall():
    time.sleep(STALL_SECONDS)


def huge():
    block = b"x" * (1 << 20)
    for _ in range(300):
        write(block)


def play(mode, action):
    if action == "negative_size":
        write(header({"path": "outs/model.pkl", "size": -5}) + b"abc" + header({"end": True}))
    elif action == "huge_size":
        write(header({"path": "outs/model.pkl", "size": 1 << 62}) + header({"end": True}))
    elif action == "string_size":
        write(header({"path": "outs/model.pkl", "size": "12"}) + header({"end": True}))
    elif action == "stall":  # a few bytes of a file, then silence
        write(header({"path": "outs/model.pkl", "size": 1000}) + b"0123456789")
        stall()
    elif action == "silent":
        stall()
    elif action == "garbage":
        write(b"<<this is not json>>\n")
    elif action == "non_utf8":
        write(b"\xff\xfe\xfd\x80\n")
    elif action == "empty":
        pass
    elif action == "json_list":
        write(b"[1, 2, 3]\n")
    elif action == "huge":
        huge()
    elif action == "nul_name" and mode == "pack":
        write(header({"path": "outs/model\u0000.pkl", "size": 1}) + b"x" + b"\0\0\0\0")
        write(header({"end": True}))
    elif action == "nul_name":
        write(header({"python": "3", "home": "/root\u0000x", "blake3": False, "free_bytes": 1}))
    elif action == "non_str_name":
        write(header({"path": ["outs", "model.pkl"], "size": 1}) + header({"end": True}))
    elif action == "bad_state":
        write(header({"state": 17}))
    else:
        raise SystemExit(f"unknown action {action!r}")


def main():
    plan_path, argv = sys.argv[1], sys.argv[2:]
    with open(plan_path) as handle:
        plan = json.load(handle)
    is_helper = len(argv) >= 3 and argv[0] == "-c"
    if is_helper and argv[2] == plan.get("mode"):
        with open(plan_path + ".pids", "a") as handle:
            handle.write(f"{os.getpid()}\n")
        play(plan["mode"], plan["action"])
        sys.exit(int(plan.get("exit", 0)))
    os.execv(REAL_PYTHON, [REAL_PYTHON, *argv])


if __name__ == "__main__":
    main()
