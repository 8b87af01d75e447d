"""First-run errors (bad config, bad home, no display, wrong folder): one line, exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.runs.gitrepo import cli_env, make_repo, run_cli
from tests.support import require

BROKEN_CONFIG = '[watch]\nrepos = ["/tmp/a",\n'


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line of a failed command (fails the test on anything else)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def broken_config(watchkeeper_home: Path) -> Path:
    config = watchkeeper_home / "config.toml"
    config.write_text(BROKEN_CONFIG)
    return config


@pytest.mark.parametrize(
    "command",
    [
        ["watch", "list"],
        ["watch", "add", "."],
        ["watch", "remove", "."],
        ["coding-time"],
        ["remote", "list"],
        ["agent", "run"],
        ["agent", "start"],
    ],
)
def test_a_malformed_config_is_named_with_its_line(
    command: list[str], broken_config: Path, tmp_path: Path
) -> None:
    result = run_cli(tmp_path, *command)
    line = one_line_error(result)
    assert f"{broken_config}:2: invalid TOML" in line
    assert "Fix the syntax there" in line


def test_agent_start_says_why_the_agent_died(watchkeeper_home: Path, tmp_path: Path) -> None:
    (watchkeeper_home / "config.toml").write_text('[schedule]\nrescan_minutes = "soon"\n')
    line = one_line_error(run_cli(tmp_path, "agent", "start"))
    assert "exited during start-up" in line
    assert "rescan_minutes must be a positive number, not 'soon'" in line
    status = run_cli(tmp_path, "agent", "status")
    assert status.returncode == 3


def test_an_unknown_config_section_is_named_with_its_line(
    watchkeeper_home: Path, tmp_path: Path
) -> None:
    config = watchkeeper_home / "config.toml"
    config.write_text("[watch]\nrepos = []\n\n[wacth]\ndata = []\n")
    line = one_line_error(run_cli(tmp_path, "watch", "list"))
    assert f"{config}:4: unknown section [wacth]" in line


@pytest.mark.parametrize(
    ("command", "code", "says"),
    [
        (["alerts"], 0, ""),
        (["status"], 2, "no repo declares models"),  # nothing to check, not a config error
        (["models", "list"], 0, ""),
    ],
)
def test_commands_that_do_not_read_the_config_still_work(
    command: list[str], code: int, says: str, broken_config: Path, tmp_path: Path
) -> None:
    result = run_cli(tmp_path, *command)
    assert result.returncode == code, result.stderr
    assert says in result.stderr and "config.toml" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["watch", "list"],
        ["alerts"],
        ["remote", "list"],
        ["agent", "start"],
        ["models", "list"],
        ["coding-time", "--repo", "."],
    ],
)
def test_a_home_that_is_a_file_is_named(command: list[str], tmp_path: Path) -> None:
    home_file = tmp_path / "home-file"
    home_file.write_text("not a folder\n")
    result = subprocess.run(
        [sys.executable, "-m", "agent", *command],
        cwd=tmp_path,
        env={**cli_env(), "WATCHKEEPER_HOME": str(home_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_line_error(result)
    assert f"WATCHKEEPER_HOME={home_file} is a file, not a folder" in line


def test_a_home_inside_a_file_is_named(tmp_path: Path) -> None:
    home_file = tmp_path / "home-file"
    home_file.write_text("not a folder\n")
    result = subprocess.run(
        [sys.executable, "-m", "agent", "status"],
        cwd=tmp_path,
        env={**cli_env(), "WATCHKEEPER_HOME": str(home_file / "inside")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"{home_file} is a file, not a folder" in one_line_error(result)


def test_an_unwritable_home_is_named(tmp_path: Path) -> None:
    require(
        os.geteuid() == 0 and shutil.which("setpriv") is not None,
        "root and setpriv",
        "run the tests as root with util-linux",
    )
    home = tmp_path / "read-only-home"
    home.mkdir(mode=0o500)
    no_override = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    for command, shown in ((["status"], str(home)), (["watch", "list"], str(home))):
        result = subprocess.run(
            [*no_override, sys.executable, "-m", "agent", *command],
            cwd=tmp_path,
            env={**cli_env(), "WATCHKEEPER_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"WATCHKEEPER_HOME={shown} is not writable" in one_line_error(result)
        result = subprocess.run(
            [*no_override, sys.executable, "-m", "agent", *command],
            cwd=tmp_path,
            env={**cli_env(), "WATCHKEEPER_HOME": str(home / "sub")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"cannot be created in {home}" in one_line_error(result)


def test_coding_time_names_a_repo_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    line = one_line_error(run_cli(tmp_path, "coding-time", "--repo", str(missing)))
    assert f"--repo {missing}: does not exist" in line


# -- train outside the repo ------------------------------------------------------------------
def test_train_outside_the_repo_runs_in_the_registered_repo_that_declares_it(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path)
    assert run_cli(repo, "init").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(elsewhere, "train", "churn")
    assert result.returncode == 0, result.stderr
    assert f"training churn in {repo} (declared there)" in result.stderr
    assert "churn v1 succeeded" in result.stderr
    unknown = one_line_error(run_cli(elsewhere, "train", "fraud"))
    assert "no registered repo declares a model named 'fraud'" in unknown


def test_train_outside_the_repo_asks_for_repo_when_several_declare_it(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = make_repo(tmp_path / "one"), make_repo(tmp_path / "two")
    for repo in (first, second):
        assert run_cli(repo, "init").returncode == 0
    line = one_line_error(run_cli(tmp_path, "train", "churn"))
    assert "several registered repos declare a model named 'churn'" in line
    assert str(first) in line and str(second) in line and "--repo PATH" in line
    chosen = run_cli(tmp_path, "train", "churn", "--repo", str(second))
    assert chosen.returncode == 0, chosen.stderr
    assert "churn v1 succeeded" in chosen.stderr


# -- the desktop app without a usable display ------------------------------------------------
def app_environment(**settings: str) -> dict[str, str]:
    environment = cli_env()
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        environment.pop(name, None)
    return {**environment, **settings}


def free_display() -> str:
    number = next(n for n in range(87, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    return f":{number}"


@pytest.mark.parametrize("arguments", [[], ["--screenshot", "shots"]])
def test_app_without_a_display_says_how_to_get_one(arguments: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "app", *arguments],
        cwd=tmp_path,
        env=app_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_line_error(result)
    assert "no display: neither DISPLAY nor WAYLAND_DISPLAY is set" in line
    assert "Xvfb" in line and "QT_QPA_PLATFORM=offscreen" in line
    assert not (tmp_path / "shots").exists()


def test_app_on_a_display_nobody_serves_names_it(tmp_path: Path) -> None:
    display = free_display()
    result = subprocess.run(
        [sys.executable, "-m", "agent", "app"],
        cwd=tmp_path,
        env=app_environment(DISPLAY=display),
        capture_output=True,
        text=True,
        timeout=90,
    )
    line = one_line_error(result)
    assert f"Qt cannot open a window on DISPLAY={display}" in line
    assert f"could not connect to display {display}" in line


def test_python_m_desktop_app_without_a_display_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "desktop_app"],
        cwd=tmp_path,
        env=app_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "no display" in one_line_error(result)


LIBRARY_DIR = Path("/usr/lib/x86_64-linux-gnu")


def test_app_without_the_xcb_libraries_says_what_to_install(tmp_path: Path) -> None:
    """Two libraries Qt's xcb plugin needs are hidden by an overlay in a private mount namespace."""
    require(
        os.geteuid() == 0
        and shutil.which("unshare") is not None
        and (LIBRARY_DIR / "libxcb-cursor.so.0").exists(),
        "root, unshare and the xcb libraries",
        "run the tests as root on Debian/Ubuntu (x86_64) with libxcb-cursor0 installed",
    )
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    hide = " && ".join(
        f"mknod {upper / name} c 0 0" for name in ("libxcb-cursor.so.0", "libxkbcommon-x11.so.0")
    )
    script = (
        f"mount --make-rprivate / && {hide} && mount -t overlay overlay "
        f"-o lowerdir={LIBRARY_DIR},upperdir={upper},workdir={work} {LIBRARY_DIR} && "
        f'exec "$0" -m agent app'
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, sys.executable],
        cwd=tmp_path,
        env=app_environment(DISPLAY=free_display()),
        capture_output=True,
        text=True,
        timeout=90,
    )
    if "mount" in result.stderr and "error:" not in result.stderr:
        pytest.skip(f"overlay mounts are not allowed here: {result.stderr.strip()}")
    line = one_line_error(result)
    assert "libxcb-cursor.so.0, libxkbcommon-x11.so.0 missing" in line
    assert "sudo apt-get install libxcb-cursor0 libxkbcommon-x11-0" in line


@pytest.mark.gui
def test_app_screenshots_on_a_real_virtual_display(tmp_path: Path) -> None:
    """The checks let a usable display through: a real Xvfb, the real xcb plugin."""
    require(bool(shutil.which("Xvfb")), "Xvfb", "apt-get install xvfb libxcb-cursor0")
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as display_pipe:
            display = ":" + display_pipe.readline().strip()
        result = subprocess.run(
            [sys.executable, "-m", "agent", "app", "--screenshot", str(tmp_path / "shots")],
            cwd=tmp_path,
            env=app_environment(DISPLAY=display),
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "shots").glob("*.png"))
