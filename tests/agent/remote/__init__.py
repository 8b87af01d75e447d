"""Tests of agent.remote: real sshd on 127.0.0.1 and a real single-node Slurm."""
