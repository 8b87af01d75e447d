#!/usr/bin/env bash
# Start a single-node Slurm on this machine for the tests (munge, slurmctld, slurmd on localhost).
# Idempotent: safe to run again while it is up. Needs root and `apt-get install slurm-wlm munge`.
set -euo pipefail

fail() {
    echo "start-test-slurm: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (it writes /etc/slurm and starts daemons)"
for program in munged mungekey slurmctld slurmd sinfo scontrol; do
    command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] \
        || fail "$program is missing; install it with: apt-get install -y slurm-wlm munge"
done
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

node="$(hostname -s)"
cpus="$(nproc)"

# 1. munge: a key, folders owned by munge, the daemon running as munge.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -f -k /etc/munge/munge.key
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force \
        || fail "munged did not start; see /var/log/munge/munged.log"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null | unmunge >/dev/null 2>&1 || fail "munge does not answer"
fi

# 2. slurm.conf for one node called after this host.
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
config="$(mktemp)"
cat >"$config" <<EOF
# Written by scripts/start-test-slurm.sh: a one-node cluster for Watchkeeper's tests.
ClusterName=watchkeeper-test
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/var/run/slurmctld.pid
SlurmdPidFile=/var/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$config" /etc/slurm/slurm.conf; then
    cp "$config" /etc/slurm/slurm.conf
    changed=1
fi
rm -f "$config"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$changed" -eq 1 ]; then
    for pidfile in /var/run/slurmd.pid /var/run/slurmctld.pid; do
        if running "$pidfile"; then
            kill "$(cat "$pidfile")" || true
            sleep 1
        fi
    done
fi

# 3. the daemons.
if ! running /var/run/slurmctld.pid; then
    slurmctld || fail "slurmctld did not start; see /var/log/slurm/slurmctld.log"
fi
if ! running /var/run/slurmd.pid; then
    slurmd || fail "slurmd did not start; see /var/log/slurm/slurmd.log"
fi

# 4. wait until the node is idle (bring it back if it came up down or drained).
for _ in $(seq 60); do
    state="$(sinfo -h -n "$node" -o '%t' 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle | mix | alloc)
            echo "start-test-slurm: node ${node} is ${state}; partition debug is up"
            exit 0
            ;;
        down* | drain* | drng*)
            scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
            ;;
    esac
    sleep 1
done
fail "node ${node} did not become idle in 60 s (last state: ${state:-none}); see /var/log/slurm/"
