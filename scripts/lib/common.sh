# shellcheck shell=bash
# What the bash scripts of this tree share (sourced): scripts/{demo,bench,test,fuzz}, bench/*.sh
# and tests/integration/lib.sh. (slurm/lib/softprompt-job.sh stands alone: scripts/submit copies
# it into job scripts that run without this tree.)
#
#   SP_ROOT                       the source tree
#   SP_EXIT_STOPPED               75: softprompt train stopped after a checkpoint, resumable
#   sp_mpi_env                    the Open MPI environment for this machine
#   sp_build DIR TYPE [CMAKE-OPTION...] [-- TARGET...]   configure and build
#   sp_stop_at PID SIGNAL RUN_DIR STEPS [SECONDS]        stop a training run at a step
#   sp_python FILE.py ARGS...     python3 on a module of scripts/lib (which it may import)

SP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SP_EXIT_STOPPED=75

# sp_mpi_env: mpirun as root (containers, CI) and with more ranks than cores (a small machine
# shared by tests).
sp_mpi_env() {
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
}

# sp_build DIR TYPE [CMAKE-OPTION...] [-- TARGET...]: configures the tree into DIR with
# CMAKE_BUILD_TYPE=TYPE and the options (cmake's configure messages hidden), then builds the
# targets (default: all) with one job per core.
sp_build() {
  local _spb_dir=$1 _spb_type=$2 _spb_opts=() _spb_make
  shift 2
  while (( $# )) && [[ $1 != -- ]]; do _spb_opts+=("$1"); shift; done
  (( $# )) && shift
  _spb_make=(cmake --build "$_spb_dir" -j "$(nproc)")
  (( $# )) && _spb_make+=(--target "$@")
  cmake -S "$SP_ROOT" -B "$_spb_dir" -DCMAKE_BUILD_TYPE="$_spb_type" "${_spb_opts[@]}" >/dev/null || return
  "${_spb_make[@]}"
}

# sp_python FILE.py ARGS...: runs scripts/lib/FILE.py with python3.
sp_python() { local _spp_file=$1; shift; python3 "$SP_ROOT/scripts/lib/$_spp_file" "$@"; }

# sp_stop_at PID SIGNAL RUN_DIR STEPS [SECONDS]: stops a training run the way a scheduler does.
# Waits until the run writing RUN_DIR/metrics.jsonl has logged STEPS training steps (or PID has
# ended; at most SECONDS, default: as long as PID runs), sends SIGNAL to PID (softprompt train,
# or mpirun, which passes it on to the ranks) and waits for PID. Sets SP_STOP_STATUS to its exit
# status and returns 0 when that is SP_EXIT_STOPPED (it checkpointed and stopped: resume it with
# the same command line), else 1. Returns 2 when STEPS were not reached within SECONDS (PID is
# then killed).
sp_stop_at() {
  local _sps_pid=$1 _sps_sig=$2 _sps_dir=$3 _sps_steps=$4 _sps_limit=() _sps_rc=0
  [[ -n ${5:-} ]] && _sps_limit=(--timeout "$5")
  SP_STOP_STATUS=""
  sp_python metrics.py wait "$_sps_dir/metrics.jsonl" "$_sps_steps" --pid "$_sps_pid" "${_sps_limit[@]}" \
    || _sps_rc=$?
  if (( _sps_rc != 0 && _sps_rc != 1 )); then      # 3: not reached in time
    kill -KILL "$_sps_pid" 2>/dev/null || true
    wait "$_sps_pid" 2>/dev/null || true
    return 2
  fi
  kill -"$_sps_sig" "$_sps_pid" 2>/dev/null || true
  SP_STOP_STATUS=0
  wait "$_sps_pid" || SP_STOP_STATUS=$?
  (( SP_STOP_STATUS == SP_EXIT_STOPPED ))
}
