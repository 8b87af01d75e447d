"""Remote configuration: the `remote add/list/remove` commands and ~/.ssh/config resolution."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.config import UserConfig
from agent.errors import WatchkeeperError
from agent.remote.config import RemoteConfig, list_remotes, load_remote, resolve_host
from agent.remote.connection import quote_command
from agent.remote.executors import sbatch_options


def test_add_list_remove_round_trip_through_config_toml() -> None:
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "remote", "add", "cluster", "--host", "login.example.org", "--port", "2222",
            "--user", "ana", "--key", "~/.ssh/id_cluster", "--kind", "slurm",
            "--workdir", "/scratch/ana/wk", "--python", "/opt/py/bin/python3",
            "--partition", "gpu", "--sbatch-arg", "--account=ml", "--sbatch-arg", "--qos=high",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    remote = load_remote("cluster")
    assert remote == RemoteConfig(
        name="cluster",
        host="login.example.org",
        port=2222,
        user="ana",
        key="~/.ssh/id_cluster",
        kind="slurm",
        workdir="/scratch/ana/wk",
        python="/opt/py/bin/python3",
        partition="gpu",
        sbatch_args=("--account=ml", "--qos=high"),
    )
    text = UserConfig.load().path.read_text()
    assert "[remotes.cluster]" in text and "password" not in text
    listed = runner.invoke(main, ["remote", "list"])
    assert "cluster" in listed.output and "login.example.org" in listed.output
    assert runner.invoke(main, ["remote", "remove", "cluster"]).exit_code == 0
    assert list_remotes() == []


def test_unknown_remote_names_the_configured_ones() -> None:
    runner = CliRunner()
    runner.invoke(main, ["remote", "add", "gpu", "--host", "gpu.lan"])
    result = runner.invoke(main, ["remote", "remove", "gpux"])
    assert result.exit_code == 2
    assert "no remote named 'gpux'" in result.output and "gpu" in result.output


def test_partition_without_slurm_is_refused() -> None:
    result = CliRunner().invoke(main, ["remote", "add", "x", "--host", "h", "--partition", "p"])
    assert result.exit_code == 2 and "--kind slurm" in result.output


def test_bad_field_in_config_toml_is_named(watchkeeper_home: Path) -> None:
    (watchkeeper_home / "config.toml").write_text('[remotes.gpu]\nhost = "h"\nprot = 22\n')
    with pytest.raises(WatchkeeperError, match=r"\[remotes.gpu\]: unknown key 'prot'"):
        load_remote("gpu")


@pytest.mark.parametrize("value", ["-1", "0", '"fast"', "true", "100000"])
def test_a_bad_read_timeout_is_named(watchkeeper_home: Path, value: str) -> None:
    config = watchkeeper_home / "config.toml"
    config.write_text(f'[remotes.gpu]\nhost = "h"\nread_timeout_seconds = {value}\n')
    with pytest.raises(WatchkeeperError, match=r"\[remotes.gpu\]: read_timeout_seconds must be"):
        load_remote("gpu")


def test_the_read_timeout_is_kept_in_config_toml(watchkeeper_home: Path) -> None:
    (watchkeeper_home / "config.toml").write_text(
        '[remotes.gpu]\nhost = "h"\nread_timeout_seconds = 2.5\n'
    )
    remote = load_remote("gpu")
    assert remote.read_timeout_seconds == 2.5
    assert remote.to_table()["read_timeout_seconds"] == 2.5
    assert RemoteConfig("other", "h").read_timeout_seconds == 180.0
    assert "read_timeout_seconds" not in RemoteConfig("other", "h").to_table()


def test_ssh_config_alias_with_proxy_jump(tmp_path: Path) -> None:
    config = paramiko.SSHConfig.from_text(
        "Host gpu\n  HostName 10.0.0.7\n  Port 2200\n  User ana\n  IdentityFile /keys/gpu\n"
        "  ProxyJump bastion\n"
        "Host bastion\n  HostName bastion.example.org\n  User jump\n  Port 2022\n"
    )
    target = resolve_host("gpu", ssh_config=config)
    assert (target.hostname, target.port, target.user) == ("10.0.0.7", 2200, "ana")
    assert target.key_files == ("/keys/gpu",)
    assert target.known_hosts_name == "[10.0.0.7]:2200"
    (jump,) = target.jumps
    assert (jump.hostname, jump.port, jump.user) == ("bastion.example.org", 2022, "jump")
    explicit = resolve_host("gpu", port=22, user="bob", key="/k", ssh_config=config)
    assert (explicit.port, explicit.user, explicit.key_files[0]) == (22, "bob", "/k")
    assert explicit.known_hosts_name == "10.0.0.7"


def test_quoted_commands_reach_the_program_unchanged() -> None:
    nasty = ["a b", "it's", '"q"', "$HOME", "`id`", "x;rm -rf /", "*", "\\", "new\nline", ""]
    command = quote_command(["printf", "%s\\0", *nasty])
    output = subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    assert output.split(b"\0")[:-1] == [word.encode() for word in nasty]
    assert shlex.split(command)[2:] == nasty


def test_resources_map_to_sbatch_flags() -> None:
    remote = RemoteConfig("c", "h", kind="slurm", partition="debug", sbatch_args=("--qos=x",))
    flags = sbatch_options(remote, {"cpus": 4, "memory": "8G", "gpus": 2, "time": "01:00:00"})
    assert flags == [
        "--partition=debug",
        "--cpus-per-task=4",
        "--mem=8G",
        "--gres=gpu:2",
        "--time=01:00:00",
        "--qos=x",
    ]
    assert sbatch_options(remote, {"partition": "gpu"})[0] == "--partition=gpu"
    with pytest.raises(WatchkeeperError, match="'disk'"):
        sbatch_options(remote, {"disk": "1T"})
