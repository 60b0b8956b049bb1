#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_cluster.py and for trying
# `experiments.py --launcher slurm` by hand (docs/cluster.md). Needs root and Debian.
#
#   tests/slurm_cluster.sh accounting   # slurmctld + slurmd + slurmdbd on MariaDB (sacct works)
#   tests/slurm_cluster.sh plain        # slurmctld + slurmd, no accounting storage
#
# Each configuration lives in /var/lib/slurm-test/<name>/ (slurm.conf, state, logs) and
# has its own ports, so both can run at once; point the SLURM commands at one with
#   export SLURM_CONF=/var/lib/slurm-test/<name>/slurm.conf
# Idempotent: installs the Debian packages once, reuses daemons that already answer.
# No systemd: the daemons are started directly and run until the machine stops.
set -euo pipefail

MODE=${1:-accounting}
case "$MODE" in
  accounting) PORT=6817 ;;
  plain) PORT=6827 ;;
  *) echo "usage: $0 accounting|plain" >&2; exit 2 ;;
esac
ROOT=/var/lib/slurm-test
DIR=$ROOT/$MODE
DBD_PORT=6819
export SLURM_CONF=$DIR/slurm.conf

install_packages() {
  local missing=()
  for bin in slurmctld slurmd slurmdbd munged mariadbd sbatch; do
    command -v "$bin" >/dev/null || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing SLURM, munge and MariaDB (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # A policy-rc.d keeps the packages from starting their daemons: this script starts them.
  local policy=/usr/sbin/policy-rc.d own_policy=
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy && own_policy=1
  fi
  apt-get install -y -qq slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
  [ -z "$own_policy" ] || rm -f $policy
}

alive() {  # the process whose pid file is $1 still runs
  [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

wait_for() {  # wait_for WHAT COMMAND...: up to 60 s until COMMAND succeeds
  local what=$1; shift
  for _ in $(seq 120); do "$@" >/dev/null 2>&1 && return; sleep 0.5; done
  echo "$what did not come up; its log is in $DIR or $ROOT" >&2; exit 1
}

start_munge() {
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  mkdir -p /run/munge && chown munge:munge /run/munge
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
  runuser -u munge -- munged
  wait_for munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    (mariadbd --user=mysql >"$ROOT/mariadb.log" 2>&1 &)
    wait_for MariaDB mariadb-admin ping
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
  local conf=$ROOT/slurmdbd.conf
  cat > "$conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$ROOT/slurmdbd.pid
LogFile=$ROOT/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$conf"  # slurmdbd refuses a configuration others can read (the password)
  alive "$ROOT/slurmdbd.pid" && return
  SLURM_CONF=$conf slurmdbd
  wait_for slurmdbd sacctmgr -n list cluster
}

write_slurm_conf() {
  local cpus mem accounting
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
  accounting="AccountingStorageType=accounting_storage/none"
  [ "$MODE" = accounting ] && accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT"
  mkdir -p "$DIR/state" "$DIR/spool"
  local new=$SLURM_CONF.new
  # proctrack/linuxproc and task/none: no cgroups and no systemd here. Root runs the jobs
  # (SlurmUser=root), as the tests do. MinJobAge keeps ended jobs in squeue briefly only.
  cat > "$new" <<EOF
ClusterName=test$MODE
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
$accounting
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=30
# A requeued job waits this long (120 s by default) before it starts again.
AuthInfo=cred_expire=10
KillWait=10
SlurmdTimeout=60
NodeName=$(hostname -s) CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "$new" "$SLURM_CONF"; then  # another configuration: restart its daemons on it
    for daemon in slurmd slurmctld; do
      alive "$DIR/$daemon.pid" && kill "$(cat "$DIR/$daemon.pid")"
      while alive "$DIR/$daemon.pid"; do sleep 0.2; done
    done
  fi
  mv "$new" "$SLURM_CONF"
}

start_slurm() {
  alive "$DIR/slurmctld.pid" || slurmctld
  wait_for slurmctld scontrol ping
  alive "$DIR/slurmd.pid" || slurmd
  # a node left DOWN by an earlier run of the daemons comes back
  scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  wait_for "the node" sh -c "sinfo -h -o %t | grep -qE '^(idle|mix|alloc)'"
}

install_packages
mkdir -p "$ROOT"
start_munge
write_slurm_conf
if [ "$MODE" = accounting ]; then
  start_mariadb
  start_slurmdbd
fi
if [ "$MODE" = accounting ]; then  # the cluster in the database before slurmctld registers
  sacctmgr -i add cluster "test$MODE" >/dev/null 2>&1 || true
fi
start_slurm
echo "SLURM ($MODE) is up: export SLURM_CONF=$SLURM_CONF"
