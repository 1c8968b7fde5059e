#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for testing `vaebench -m ... hydra/launcher=slurm_cpu` for real.
#
#   tests/slurm/cluster.sh start DIR   # munged, slurmctld, slurmd; prints `export SLURM_CONF=DIR/slurm.conf`
#   tests/slurm/cluster.sh stop DIR    # stops the three daemons started from DIR, waits until they are gone
#
# Needs Debian's slurm-wlm and munge (`apt-get install -y slurm-wlm munge`) and root (munged and slurmd run as
# root here). Everything lives in DIR: the config, a munge key and socket of its own (so a munged already running
# on the machine is neither used nor disturbed), state, spool, logs and pid files; nothing is written to /etc.
# The node offers 2 CPUs and no accounting (accounting_storage/none: sacct is refused, as on many small
# clusters). The daemons run at nice 19 and jobs inherit it, so a test's jobs yield to anything else on the
# machine. Exit status 3 with one line when slurm-wlm or munge is missing (a test skips on it), 1 when a daemon
# does not come up (its log is printed).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z $cmd || -z $dir ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
dir=$(realpath -m "$dir")
ctld_port=${VAEBENCH_SLURMCTLD_PORT:-6917}  # not SLURM's default 6817/6818: never meet a real cluster's daemons
slurmd_port=${VAEBENCH_SLURMD_PORT:-6918}

stop_pidfile() {  # kill the process named in a pid file (if any) and wait up to 10 s for it to go
    local file=$1 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    stop_pidfile "$dir/munged.pid"
}

if [[ $cmd == stop ]]; then
    stop
    exit 0
fi
[[ $cmd == start ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

for program in munged slurmctld slurmd sbatch squeue scancel; do
    if ! PATH=$PATH:/usr/sbin:/sbin command -v "$program" >/dev/null; then
        echo "cluster.sh: $program not found: install slurm-wlm and munge (apt-get install -y slurm-wlm munge)" >&2
        exit 3
    fi
done
if [[ $(id -u) != 0 ]]; then
    echo "cluster.sh: needs root (munged and slurmd run as root in this single-node setup)" >&2
    exit 3
fi
PATH=$PATH:/usr/sbin:/sbin

stop  # a previous start from this directory that was never stopped
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 700 "$dir/munge"
node=$(hostname -s)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)

if [[ ! -s $dir/munge/munge.key ]]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
    chmod 400 "$dir/munge/munge.key"
fi

cat > "$dir/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh: one node, this machine, 2 CPUs, no accounting.
ClusterName=vaebench-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
KillWait=5
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf

fail() {
    echo "cluster.sh: $1 did not start; its log:" >&2
    tail -n 20 "$2" >&2 2>/dev/null || true
    stop
    exit 1
}

nice -n 19 munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" \
    || fail munged "$dir/munged.log"
nice -n 19 slurmctld -c -f "$SLURM_CONF" || fail slurmctld "$dir/slurmctld.log"
nice -n 19 slurmd -c -f "$SLURM_CONF" || fail slurmd "$dir/slurmd.log"

# Up when the node accepts jobs.
for _ in $(seq 300); do
    state=$(sinfo --noheader --format=%t 2>/dev/null || true)
    [[ $state == idle* || $state == mix* ]] && { echo "export SLURM_CONF=$SLURM_CONF"; exit 0; }
    sleep 0.1
done
fail "the node (state: ${state:-none})" "$dir/slurmd.log"
