#!/usr/bin/env bash
# A real one-node SLURM cluster (slurm-wlm 22.05 from Debian 12) with accounting, on this machine.
#
#   slurm/cluster.sh start    install what is missing, configure, start every daemon, wait for idle
#   slurm/cluster.sh stop     stop slurmd, slurmctld, slurmdbd, MariaDB and munged cleanly
#   slurm/cluster.sh status   print the node state; exit 0 only when jobs can run
#
# Works as root without systemd or Docker. Every step checks before it acts, so `start` can be
# run again at any time (and after `stop`). Logs: /var/log/slurm/*.log, /var/log/munge/.
# See slurm/README.md for what it configures and why.
set -euo pipefail

readonly CLUSTER=local
readonly PARTITION=debug
readonly CONF_DIR=/etc/slurm
readonly LOG_DIR=/var/log/slurm
readonly RUN_DIR=/run/slurm
readonly DB_NAME=slurm_acct_db
readonly DB_USER=slurm
readonly WAIT_S=${SLURM_CLUSTER_WAIT_S:-60}
readonly PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { printf '[cluster] %s\n' "$*" >&2; }

die() {
  printf '[cluster] ERROR: %s\n' "$*" >&2
  # The last lines of every daemon log usually say why a daemon would not start.
  local f
  for f in "$LOG_DIR"/slurmdbd.log "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log \
           /var/log/munge/munged.log /var/log/mysql/error.log; do
    if [[ -s $f ]]; then
      printf -- '--- tail %s ---\n' "$f" >&2
      tail -n 15 "$f" >&2
    fi
  done
  exit 1
}

# read_pid PIDFILE: the pid in PIDFILE, or nothing (a daemon removes its file as it exits).
read_pid() { cat "$1" 2>/dev/null || true; }

# pid_alive PIDFILE: the process named in PIDFILE is running.
pid_alive() {
  local pid
  pid=$(read_pid "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# wait_for SECONDS DESCRIPTION CMD...: retry CMD every half second until it succeeds.
wait_for() {
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "timed out after ${limit}s waiting for $what"
}

# wait_gone SECONDS PID: wait until process PID has exited.
wait_gone() {
  local limit=$1 pid=$2 i
  for ((i = 0; i < limit * 2; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  return 1
}

host() { hostname -s; }

# ---------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  # Postinst scripts may try to start services; no systemd here, so whatever they do we start
  # the daemons ourselves below.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge /etc/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if ! pid_alive /run/munge/munged.pid; then
    log "starting munged"
    # munged refuses to run as root; there is no sudo, so su to the munge user.
    su -s /bin/sh munge -c /usr/sbin/munged || die "munged did not start"
  fi
  wait_for 10 "munge to answer" sh -c 'munge -n | unmunge'
}

start_mariadb() {
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  # Slurmdbd warns (and can deadlock on big purges) with the 50 s default lock wait.
  if [[ ! -f /etc/mysql/mariadb.conf.d/99-slurmdbd.cnf ]]; then
    printf '[mysqld]\ninnodb_lock_wait_timeout=900\ninnodb_buffer_pool_size=256M\n' \
      >/etc/mysql/mariadb.conf.d/99-slurmdbd.cnf
  fi
  if ! mysqladmin ping >/dev/null 2>&1; then
    log "starting MariaDB"
    # mysqld_safe stays in the foreground: detach it so it outlives this script.
    # Debian's config sends its log to syslog, and no syslog daemon runs here: use a file.
    install -d -o mysql -g adm -m 2750 /var/log/mysql
    setsid -f mysqld_safe --user=mysql --skip-syslog --log-error=/var/log/mysql/error.log \
      >"$LOG_DIR/mysqld_safe.log" 2>&1 </dev/null
  fi
  wait_for 60 "MariaDB to answer" mysqladmin ping
}

# The database password lives only in slurmdbd.conf (mode 600); reuse it when that file exists.
db_password() {
  local f=$CONF_DIR/slurmdbd.conf
  if [[ -s $f ]] && grep -q '^StoragePass=' "$f"; then
    sed -n 's/^StoragePass=//p' "$f"
  else
    # od, not `tr </dev/urandom | head`: head's early exit is a SIGPIPE that pipefail reports.
    od -An -N12 -tx1 /dev/urandom | tr -d ' \n'
  fi
}

setup_database() {
  local pass=$1
  # Root logs in over the unix socket (Debian's default), so no root password is involved.
  mysql --protocol=socket -uroot <<SQL || die "could not create database $DB_NAME"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

# write_if_changed FILE MODE: replace FILE with stdin when its content differs; 0 = changed.
write_if_changed() {
  local file=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    chmod "$mode" "$file"
    return 1
  fi
  install -m "$mode" "$tmp" "$file"
  rm -f "$tmp"
  return 0
}

write_slurmdbd_conf() {
  local pass=$1
  write_if_changed "$CONF_DIR/slurmdbd.conf" 600 <<EOF || true
# Written by slurm/cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$pass
StorageLoc=$DB_NAME
EOF
}

# Prints "changed" when slurm.conf was rewritten.
write_slurm_conf() {
  local h cpus mem_mb
  h=$(host)
  cpus=$(nproc)
  # Leave ~5% (at least 256 MB) for the OS: slurmd drains a node whose RealMemory exceeds what
  # it finds.
  mem_mb=$(awk '/^MemTotal:/ { m = int($2 / 1024); r = int(m * 0.05); if (r < 256) r = 256;
                               print m - r }' /proc/meminfo)
  if write_if_changed "$CONF_DIR/slurm.conf" 644 <<EOF; then echo changed; fi
# Written by slurm/cluster.sh: one node ($h) that is also the controller.
ClusterName=$CLUSTER
SlurmctldHost=$h(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s,
# minimum 5); nothing slow (prolog, remote homes) runs before a job here, so 15 s is plenty.
AuthInfo=cred_expire=15
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# cgroup plugins make slurmd fail without systemd: track processes through /proc instead.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# Scheduling passes every 5 s (defaults 60 s and 30 s): a requeued job whose begin time has
# passed is otherwise only picked up by the next pass.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
# One CPU per task (not one core): each array task of a 1-CPU job gets its own slot.
SelectTypeParameters=CR_CPU
# A node that went down because slurmd stopped comes back as soon as slurmd registers again.
ReturnToService=2
# Jobs may be requeued (scontrol requeue, preemption, submitit's timeout handling).
JobRequeue=1
# Short waits so that tests of time limits and requeues finish quickly:
# KillWait: SIGTERM -> SIGKILL at a time limit; MinJobAge: finished jobs leave squeue sooner
# (sacct keeps them); InactiveLimit=0: never kill batch jobs for an idle srun.
KillWait=5
MinJobAge=60
InactiveLimit=0
OverTimeLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
NodeName=$h NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$h Default=YES MaxTime=INFINITE State=UP
EOF
}

start_slurmdbd() {
  if ! pid_alive "$RUN_DIR/slurmdbd.pid"; then
    log "starting slurmdbd"
    slurmdbd || die "slurmdbd did not start"
  fi
  wait_for 30 "slurmdbd to answer" sacctmgr -n list cluster
}

add_cluster() {
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    log "registering cluster '$CLUSTER' in the accounting database"
    local out
    out=$(sacctmgr -i add cluster "$CLUSTER" 2>&1) || grep -qi 'already exists' <<<"$out" \
      || die "sacctmgr add cluster failed: $out"
  fi
}

node_state() { sinfo -h -o '%T' 2>/dev/null | head -n 1; }

# A node can take jobs in these states (sinfo %T; a trailing * means not responding).
usable_state() { [[ $1 =~ ^(idle|mixed|allocated|completing)$ ]]; }

start_slurm() {
  local changed=$1
  # `scontrol reconfigure` does not apply everything (AuthInfo needs a restart): restart instead.
  if [[ $changed == changed ]] && pid_alive "$RUN_DIR/slurmctld.pid"; then
    log "slurm.conf changed: restarting slurmctld and slurmd"
    stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
    stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
  fi
  if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld || die "slurmctld did not start"
  fi
  wait_for 30 "slurmctld to answer" scontrol ping
  if ! pid_alive "$RUN_DIR/slurmd.pid"; then
    log "starting slurmd"
    slurmd || die "slurmd did not start"
  fi
}

wait_idle() {
  local h state i resumed=0
  h=$(host)
  for ((i = 0; i < WAIT_S * 2; i++)); do
    state=$(node_state)
    if usable_state "$state"; then return 0; fi
    # A node left drained or down by an earlier crash stays so until told otherwise.
    if ((resumed == 0)) && [[ $state =~ ^(down|drained|draining)$ ]]; then
      log "node $h is $state: resuming it"
      scontrol update NodeName="$h" State=RESUME || true
      resumed=1
    fi
    sleep 0.5
  done
  die "node $h is '${state:-unknown}' after ${WAIT_S}s, not idle ($(scontrol show node "$h" \
    2>/dev/null | grep -o 'Reason=.*' || true))"
}

cmd_start() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  local t0=$SECONDS pass changed
  install_packages
  install -d -m 0755 "$LOG_DIR" "$RUN_DIR" "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd
  start_munge
  start_mariadb
  pass=$(db_password)
  setup_database "$pass"
  write_slurmdbd_conf "$pass"
  changed=$(write_slurm_conf)
  start_slurmdbd
  add_cluster
  start_slurm "$changed"
  wait_idle
  echo "slurm cluster '$CLUSTER' up: node $(host) $(node_state), $(nproc) CPUs," \
    "partition $PARTITION, accounting on ($((SECONDS - t0))s)"
}

# ---------------------------------------------------------------------------------------------
# stop
# ---------------------------------------------------------------------------------------------

# stop_pidfile NAME PIDFILE: SIGTERM the daemon and wait for it to exit (SIGKILL after 20 s).
stop_pidfile() {
  local name=$1 pidfile=$2 pid
  pid=$(read_pid "$pidfile")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  log "stopping $name"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone 20 "$pid"; then
    log "$name did not exit after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

cmd_stop() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
  # slurmctld saves its state on SIGTERM, so queued jobs survive a stop/start.
  stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
  stop_pidfile slurmdbd "$RUN_DIR/slurmdbd.pid"
  if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then
    log "stopping MariaDB"
    mysqladmin shutdown || true
  fi
  stop_pidfile munged /run/munge/munged.pid
  echo "slurm cluster '$CLUSTER' stopped"
}

# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------

cmd_status() {
  if ! command -v sinfo >/dev/null; then
    echo "slurm: not installed (run slurm/cluster.sh start)"
    return 1
  fi
  local d f state
  for d in munged:/run/munge/munged.pid slurmdbd:$RUN_DIR/slurmdbd.pid \
           slurmctld:$RUN_DIR/slurmctld.pid slurmd:$RUN_DIR/slurmd.pid; do
    f=${d#*:}
    if pid_alive "$f"; then echo "${d%%:*}: running (pid $(read_pid "$f"))"
    else echo "${d%%:*}: stopped"; fi
  done
  if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then
    echo "mariadb: running"
  else
    echo "mariadb: stopped"
  fi
  state=$(node_state)
  echo "node $(host): ${state:-unreachable}"
  usable_state "$state"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
