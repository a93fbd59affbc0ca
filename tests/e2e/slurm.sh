#!/usr/bin/env bash
# Start (or stop) a real single-node Slurm on this machine for the integration test.
# Needs root and Debian's packages (slurmctld slurmd slurm-client munge); no systemd: the daemons are
# started directly. A fake GPU (gres on /dev/null) lets GPU rules be scheduled.
#   tests/e2e/slurm.sh start | stop
set -euo pipefail
action="${1:-start}"
conf_dir=/etc/slurm
host=$(hostname -s)

stop() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  # Without a controller, every Slurm client call (Snakemake's slurm plugin runs scontrol on every
  # invocation) waits ~9 s for it; with no config it fails at once. `start` writes the config again.
  rm -f "$conf_dir/slurm.conf"
}

if [ "$action" = stop ]; then
  stop
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
stop
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /run/munge /var/lib/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2000 ))
cat >"$conf_dir/slurm.conf" <<CONF
ClusterName=samstudy-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MinJobAge=300
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
echo "Name=gpu File=/dev/null" >"$conf_dir/gres.conf"
if id munge >/dev/null 2>&1; then
  su -s /bin/sh munge -c "/usr/sbin/munged --force" 2>/dev/null || /usr/sbin/munged --force
else
  /usr/sbin/munged --force
fi
slurmctld
slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %t 2>/dev/null | grep -qE "idle|mix"; then
    sinfo
    exit 0
  fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "Slurm did not come up" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
