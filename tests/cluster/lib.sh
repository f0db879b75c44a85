# shellcheck shell=bash
# The Slurm test harness: a real Slurm cluster of N nodes on one machine (sourced by
# tests/cluster/up, down, the tests and bench/multinode.sh; bash 4+, root, packages slurm-wlm,
# munge, iproute2, util-linux). test_slurm runs on 1 node, test_multinode on 3.
#
# Layout of one instance, tag T (a number 1-254 chosen at bring-up; every name carries it):
#   bridge   spmn<T>br   in the root namespace, address 10.250.T.1/24 (clients: sbatch, squeue)
#   hosts    spmn<T>ctl  10.250.T.2    munged (one key for all) and slurmctld, hostname "ctl"
#            spmn<T>n1   10.250.T.11   slurmd, hostname node1   (NodeName=NodeHostname=node1)
#            ...
#            spmn<T>nN   10.250.T.1N   slurmd, hostname nodeN
#   Each host is a network namespace (ip netns) plus a UTS namespace (its own hostname), joined to
#   the bridge by a veth pair whose inner end is called eth0. Every daemon, and so every
#   slurmstepd, batch script and MPI rank, runs inside its host's namespaces; Open MPI sees the
#   hosts and talks TCP between them over the bridge. The file system is shared (as NFS would be).
#   The daemons use Slurm's default ports (6817/6818) on their own addresses: nothing else on
#   the machine, another instance included (tests run side by side), can collide with them.
#   State, spool, logs and the munge key live in the instance's directory DIR:
#     DIR/cluster.env   shell lines to source: SLURM_CONF, SPC_TAG, SPC_SUBNET, SPC_NODES, ...
#     DIR/pids/NAME     PID of each daemon (munged, slurmctld, slurmd-node1, ...)
#     DIR/log/          slurmctld.log, slurmd-nodeN.log, munged.log, jobcomp.txt
#   slurm.conf (tests/cluster/up): ProctrackType=proctrack/linuxproc + TaskPlugin=task/none (no
#   cgroups or systemd needed), MpiDefault=pmix with each node's TmpFS (and so PMIx's
#   directories) inside DIR, JobRequeue=1, no accounting daemon (`sacct -c` reads the
#   jobcomp/filetxt file), AuthInfo cred_expire=5 and sched_interval=2 (a requeued job runs again
#   ~7 s later).
# Bring-up writes "softprompt-test-cluster owner=PID:START dir=DIR" as the bridge's alias; the
# owner is the process that asked for the cluster (the test). A later bring-up removes any
# instance whose owner is gone (a crashed or SIGKILLed run): it kills the processes inside that
# instance's namespaces (ip netns pids), deletes the namespaces and the bridge. Only names
# starting with "spmn" and carrying that alias are touched.

SPC_PREFIX=spmn
SPC_ALIAS_MARK=softprompt-test-cluster

_spc_log() { echo "test-cluster: $*" >&2; }

# _spc_start_time PID: the process's start time (clock ticks since boot), to tell a live owner
# from a reused PID.
_spc_start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

# spc_alive PID: the process exists and is not a zombie (our daemons' parent, `up`, has exited,
# so whoever reaps orphans collects them, maybe later than they end).
spc_alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# spc_check_installed: the commands the cluster needs, and root.
spc_check_installed() {
  local missing=() p
  for p in munged slurmctld slurmd slurmstepd sbatch srun scontrol squeue sinfo ip nsenter unshare setpriv setsid; do
    command -v "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    _spc_log "missing commands: ${missing[*]} (Debian packages slurm-wlm, munge, iproute2, util-linux)"
    return 1
  fi
  [[ $(id -u) -eq 0 ]] || { _spc_log "network namespaces and Slurm daemons need root"; return 1; }
  id munge >/dev/null 2>&1 || { _spc_log "user munge does not exist (package munge)"; return 1; }
}

# _spc_wait SECONDS CMD...: retry CMD every 0.1 s.
_spc_wait() {
  local t=$1 i; shift
  for (( i = 0; i < t * 10; i++ )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# spc_instance_namespaces TAG: the namespaces of an instance.
spc_instance_namespaces() {
  ip netns list 2>/dev/null | awk -v p="$SPC_PREFIX$1" '$1 ~ "^" p "(ctl|n[0-9]+)$" {print $1}'
}

# spc_destroy_instance TAG: kill every process inside the instance's namespaces (SIGTERM, then
# SIGKILL), delete the namespaces and the bridge. Used for stale instances and as the last step
# of a normal teardown.
spc_destroy_instance() {
  local tag=$1 ns p i pids
  for ns in $(spc_instance_namespaces "$tag"); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [[ -n $pids ]] && kill -TERM $pids 2>/dev/null
  done
  for i in $(seq 1 50); do
    pids=""
    for ns in $(spc_instance_namespaces "$tag"); do pids+=" $(ip netns pids "$ns" 2>/dev/null)"; done
    [[ -z ${pids// /} ]] && break
    (( i == 30 )) && kill -KILL $pids 2>/dev/null
    sleep 0.1
  done
  for ns in $(spc_instance_namespaces "$tag"); do
    ip link del "$ns" 2>/dev/null || true          # the veth's outer end (same name as the ns)
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$SPC_PREFIX${tag}br" 2>/dev/null || true
  return 0
}

# spc_cleanup_stale: remove instances whose owner process is gone.
spc_cleanup_stale() {
  local br tag alias owner pid start ns
  for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 \
              | grep -E "^${SPC_PREFIX}[0-9]+br$"); do
    tag=${br#"$SPC_PREFIX"}; tag=${tag%br}
    alias=$(cat "/sys/class/net/$br/ifalias" 2>/dev/null)
    [[ $alias == "$SPC_ALIAS_MARK "* ]] || continue       # not ours: leave it alone
    owner=$(sed -n 's/.* owner=\([0-9]*:[0-9]*\).*/\1/p' <<< "$alias")
    pid=${owner%%:*}; start=${owner#*:}
    if [[ -n $pid && $(_spc_start_time "$pid") == "$start" ]] && spc_alive "$pid"; then continue; fi
    _spc_log "removing stale instance $tag (owner ${pid:-?} is gone; $alias)"
    spc_destroy_instance "$tag"
  done
  # Namespaces of an instance whose bridge is already gone (crash during bring-up/teardown).
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${SPC_PREFIX}[0-9]+(ctl|n[0-9]+)$"); do
    tag=${ns#"$SPC_PREFIX"}; tag=${tag%ctl}; tag=${tag%n[0-9]*}
    [[ -e /sys/class/net/$SPC_PREFIX${tag}br ]] && continue
    _spc_log "removing stale namespace $ns (its bridge is gone)"
    spc_destroy_instance "$tag"
  done
}

# spc_load DIR: read an instance's cluster.env (exports SLURM_CONF and the SPC_* variables).
spc_load() {
  [[ -f $1/cluster.env ]] || { _spc_log "$1/cluster.env not found: not a cluster directory"; return 1; }
  # shellcheck disable=SC1091
  source "$1/cluster.env"
}

# spc_exec HOST CMD...: run CMD on a host (ctl, node1, node2, ...): in its network and UTS
# namespaces.
spc_exec() {
  local host=$1 ns; shift
  ns=$SPC_PREFIX$SPC_TAG${host/node/n}
  spc_nsenter "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
}

# spc_nsenter NS CMD...: run CMD in network namespace NS (execs: the PID stays CMD's). Not
# `ip netns exec`, which also remounts /sys for the namespace and so hides /sys/fs/cgroup, which
# slurmd 22.05 needs even with proctrack/linuxproc.
spc_nsenter() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

# spc_start_slurmd NODE: start (or restart) the slurmd of nodeN; records its PID.
spc_start_slurmd() {
  local node=$1 pid
  setsid nsenter --net="/run/netns/$SPC_PREFIX$SPC_TAG${node/node/n}" unshare --uts \
    sh -c 'hostname "$0" && exec slurmd -D -f "$1"' "$node" "$SLURM_CONF" \
    >> "$SPC_DIR/log/slurmd-$node.out" 2>&1 < /dev/null &
  pid=$!
  disown "$pid" 2>/dev/null || true    # no "Killed" job notice from the caller's shell later
  echo "$pid" > "$SPC_DIR/pids/slurmd-$node"
}

# spc_node_pids NODE: every process on nodeN (slurmd, slurmstepd, batch script, ranks).
spc_node_pids() { ip netns pids "$SPC_PREFIX$SPC_TAG${1/node/n}" 2>/dev/null; }

# spc_node_state NODE: the node's state as slurmctld sees it (idle, alloc, down*, ...).
spc_node_state() { sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n 1; }

# spc_wait_nodes_idle SECONDS: until every node is idle.
spc_wait_nodes_idle() {
  _spc_all_idle() { [[ $(sinfo -h -N -o '%T' 2>/dev/null | grep -cx idle) == "$SPC_NNODES" ]]; }
  _spc_wait "$1" _spc_all_idle
}

# spc_logs: tails of the daemon logs (tests print them on failure).
spc_logs() {
  local f
  for f in "$SPC_DIR"/log/*.log "$SPC_DIR"/log/*.out; do
    [[ -s $f ]] || continue
    echo "----- $(basename "$f") (last 25 lines)" >&2; tail -n 25 "$f" >&2
  done
}

# spc_kill_node NODE [all|slurmd+ranks]: SIGKILL processes of nodeN, by PID (found through its
# namespace), and print "comm:pid" of each. "all" (default) is a node crash: slurmd, every
# slurmstepd, batch script and rank. "slurmd+ranks" kills slurmd and the job's tasks only
# (processes whose parent is a slurmstepd), so the node's slurmstepd sees its tasks die.
spc_kill_node() {
  local node=$1 what=${2:-all} p comm ppid pcomm victims=()
  for p in $(spc_node_pids "$node"); do
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    if [[ $what == all ]]; then victims+=("$p"); echo -n "$comm:$p "; continue; fi
    ppid=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)
    pcomm=$(cat "/proc/$ppid/comm" 2>/dev/null)
    if [[ $comm == slurmd || $pcomm == slurmstepd ]]; then victims+=("$p"); echo -n "$comm:$p "; fi
  done
  echo
  (( ${#victims[@]} )) && kill -KILL "${victims[@]}" 2>/dev/null
  return 0
}

# spc_reboot_node NODE: start nodeN's slurmd again, as after a reboot: its TmpFS and the PMIx
# files of steps in its spool directory are gone first (a killed slurmstepd leaves
# stepd.slurm.pmix.JOB.STEP behind, and slurmstepd 22.05 cannot bind() that socket again when a
# requeued job with the same id runs step 0 there: "Address already in use"). Then waits until
# slurmctld takes the node back (ReturnToService=2): idle, or allocated to a waiting job.
spc_reboot_node() {
  local node=$1 p
  p=$(cat "$SPC_DIR/pids/slurmd-$node" 2>/dev/null)
  if [[ -n $p ]] && spc_alive "$p"; then _spc_log "slurmd of $node (pid $p) still runs"; return 1; fi
  rm -rf "${SPC_DIR:?}/tmp/$node"/* "$SPC_DIR/spool/$node"/stepd.slurm.pmix.* "$SPC_DIR/spool/$node"/pmix.*
  spc_start_slurmd "$node"
  _spc_node_back() { [[ $(spc_node_state "$1") =~ ^(idle|allocated|mixed|completing)$ ]]; }
  _spc_wait 60 _spc_node_back "$node"
}

# --- for the tests (tests/integration/test_slurm.sh, test_multinode.sh) and bench/multinode.sh ---

SPC_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# spc_require: the commands the cluster needs are here (the Debian packages slurm-wlm, munge and
# iproute2 are installed through scripts/setup when missing), and network namespaces can be made.
# Returns 1 with the reason on stderr.
spc_require() {
  if ! spc_check_installed 2>/dev/null; then
    _spc_log "Slurm or iproute2 is missing: installing slurm-wlm, munge and iproute2 with scripts/setup"
    "$SPC_HOME/../../scripts/setup" slurm-wlm munge iproute2 \
      || { _spc_log "scripts/setup could not install slurm-wlm, munge and iproute2"; return 1; }
    spc_check_installed || return 1
  fi
  unshare --net true 2>/dev/null || {
    _spc_log "cannot create network namespaces (unshare --net failed): root with CAP_SYS_ADMIN and a kernel with network namespaces are needed"
    return 1
  }
}

# spc_start DIR [UP-OPTION...]: brings a cluster up in DIR (tests/cluster/up) for the calling
# shell, its owner, and loads it (SLURM_CONF, SPC_*). It is torn down when the shell exits: an
# EXIT trap runs tests/cluster/down before the EXIT trap the shell had (e.g. the removal of the
# directory holding DIR), and SIGTERM, SIGINT and SIGHUP become exits (bash skips EXIT traps when
# a signal kills it). Returns 1 when bring-up failed (up has then removed what it made).
spc_start() {
  local dir=$1 old cmd="" down
  shift
  local -a up_opts=("$@")
  old=$(trap -p EXIT)
  if [[ -n $old ]]; then eval "set -- $old"; cmd=$3; fi
  printf -v down '%q %q >/dev/null 2>&1 || true' "$SPC_HOME/down" "$dir"
  # shellcheck disable=SC2064  # expanded now, on purpose
  trap "$down${cmd:+; $cmd}" EXIT
  [[ -n $(trap -p TERM) ]] || trap 'exit 143' TERM
  [[ -n $(trap -p INT) ]] || trap 'exit 130' INT
  [[ -n $(trap -p HUP) ]] || trap 'exit 129' HUP
  "$SPC_HOME/up" --owner $$ "${up_opts[@]}" "$dir" || return 1
  spc_load "$dir"
}

# spc_stop: tears the loaded cluster down (tests/cluster/down) and checks that nothing of it is
# left: no daemon, namespace or bridge. SPC_STOPPED_PIDS: the daemons' PIDs. Returns 1 with the
# reason on stderr.
spc_stop() {
  local pids p ns
  pids=$(cat "$SPC_DIR"/pids/* 2>/dev/null)
  "$SPC_HOME/down" "$SPC_DIR" || { _spc_log "tests/cluster/down $SPC_DIR failed"; return 1; }
  for p in $pids; do
    spc_alive "$p" && { _spc_log "daemon pid $p still running after teardown"; return 1; }
  done
  ns=$(spc_instance_namespaces "$SPC_TAG")
  [[ -z $ns ]] || { _spc_log "namespaces left after teardown: $ns"; return 1; }
  [[ ! -e /sys/class/net/$SPC_BRIDGE ]] || { _spc_log "bridge $SPC_BRIDGE left after teardown"; return 1; }
  # shellcheck disable=SC2034  # for the caller
  SPC_STOPPED_PIDS=$(tr '\n' ' ' <<< "$pids" | sed 's/ *$//')
}

# spc_job_field ID FIELD: a field of `scontrol show job` (the first line for arrays).
spc_job_field() { scontrol -o show job "$1" 2>/dev/null | head -n 1 | grep -o " $2=[^ ]*" | cut -d= -f2-; }
