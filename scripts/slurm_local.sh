#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for testing `shears sweep --slurm` against a real
# scheduler (Debian's slurm-wlm and munge; run as root).
#
#   scripts/slurm_local.sh install   apt-get install slurm-wlm munge (if missing)
#   scripts/slurm_local.sh start     write slurm.conf, start munged, slurmctld and slurmd, wait
#                                    until the node is idle
#   scripts/slurm_local.sh stop      cancel every job and stop the daemons
#
# The configuration lives in $SLURM_DIR (default /tmp/shears-slurm) and is found through
# /etc/slurm/slurm.conf, which is written only when absent or written by this script before.
set -euo pipefail

SLURM_DIR=${SLURM_DIR:-/tmp/shears-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by shears scripts/slurm_local.sh"

install() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

start() {
  mkdir -p "$SLURM_DIR/spool/ctld" "$SLURM_DIR/spool/d" "$SLURM_DIR/log" /etc/slurm
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "refusing to overwrite $CONF (not written by this script)" >&2
    exit 1
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
  cat > "$CONF" <<EOF
$MARK
ClusterName=shears-local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$SLURM_DIR/spool/ctld
SlurmdSpoolDir=$SLURM_DIR/spool/d
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SchedulerParameters=sched_interval=1
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then
      su -s /bin/sh munge -c "munged" || munged --force
    else
      munged --force
    fi
  fi
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd -N localhost
  for _ in $(seq 1 60); do
    if sinfo -h -o "%T" 2>/dev/null | grep -qE "^idle"; then
      sinfo
      return 0
    fi
    sleep 1
  done
  echo "the local Slurm node did not become idle; logs in $SLURM_DIR/log" >&2
  sinfo >&2 || true
  tail -n 20 "$SLURM_DIR/log/"*.log >&2 || true
  exit 1
}

stop() {
  scancel --user root 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
