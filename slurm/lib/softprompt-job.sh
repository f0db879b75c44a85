# shellcheck shell=bash
# Shared logic of the softprompt Slurm job scripts (sourced by slurm/*.sbatch and by
# scripts/submit, which also copies it into the job script it writes). bash 4.3+; needs only
# Slurm's own commands.
#
# What a job does (sp_job_train):
#   1. reads its configuration: the environment, then an optional config file (the job script's
#      first argument or SP_CONFIG) of bash KEY=VALUE lines; finds the softprompt executable
#      (sp_find_bin: the one rule of docs/slurm.md, "Which softprompt");
#   2. runs `srun --mpi=pmix softprompt train ... --resume auto` in the background and waits
#      for it with `wait`, so that signals are handled at once;
#   3. on SIGUSR1 (sent to this batch shell by `#SBATCH --signal=B:USR1@<seconds>` before the
#      time limit, or by hand: `scancel --batch --signal=USR1 JOBID`) forwards SIGUSR1 to the
#      job step (srun passes it to every rank); the trainer finishes its current step, writes a
#      checkpoint and exits with status 75 ("stopped, resumable");
#   4. decides from the step's exit status:
#        0   finished (also when the run had already finished before this job: the trainer
#            then exits 0 without training or changing anything): the job ends COMPLETED,
#            never requeued;
#        75  after our SIGUSR1, when this run trained at least one step and this script has
#            requeued the job fewer than SP_MAX_RESTARTS times: `scontrol requeue` puts the job
#            back in the queue; when it runs again the same script resumes from the newest
#            checkpoint in SP_OUT (--resume auto);
#        75  otherwise (SIGTERM from scancel, preemption or the hard time limit; the restart
#            limit reached; or no step trained since the last run: the time limit leaves no
#            time to train after the warning): not requeued; the log says how to resume by hand;
#        any other status: a real failure (bad path, bad option, a crashed rank): not requeued,
#            the job ends FAILED with the trainer's status, the log says why.
#   Every decision is logged to the job's output file and appended to SP_OUT/slurm-job.log.
#
# Configuration (environment variables or config-file lines; see docs/slurm.md):
#   SP_MODEL        Hugging Face model directory (required)
#   SP_TRAIN        training set .h5 (required)
#   SP_VALID        validation set .h5 (optional)
#   SP_OUT          output directory: checkpoints/, metrics.jsonl, adapter/ ... (required)
#   SP_TRAIN_ARGS   more `softprompt train` options, shell-quoted ("--steps 2000 --lr 0.3");
#                   not --model, --train, --valid, --out (set from the variables above), --check,
#                   nor a --resume other than auto (every run resumes: --resume auto)
#   SP_BIN          the softprompt executable (default: `softprompt` on PATH, else
#                   SP_HOME/build/softprompt or SP_HOME/bin/softprompt)
#   SP_HOME         the softprompt the job scripts come from: a source tree (slurm/lib/ and
#                   build/softprompt) or an install prefix (share/softprompt/slurm/lib/ and
#                   bin/softprompt). Default: the tree or prefix holding this file, when it is
#                   sourced from its place in one; else SOFTPROMPT_HOME (`module load softprompt`
#                   sets it to the install prefix)
#   SP_MAX_RESTARTS requeues by this script after time-limit signals (default 3)
#   SP_SRUN_ARGS    more srun options, shell-quoted (e.g. "--cpu-bind=cores")
#   SP_LAUNCHER     replaces `srun --mpi=pmix --kill-on-bad-exit=1 $SP_SRUN_ARGS`, e.g. "mpirun"
#                   where Open MPI lacks PMIx support (mpirun reads the allocation from Slurm)
# A requeued job waits in the queue for at least AuthInfo's cred_expire + 1 seconds (Slurm's
# default: 121 s) before it can start again; `scontrol update JobId=N StartTime=now` releases
# it earlier (docs/slurm.md, "Time limits and requeueing").

SP_EXIT_STOPPED=75

# Sourced from its place in an install prefix (share/softprompt/slurm/lib/ of SP_HOME) or a
# source tree (slurm/lib/ of SP_HOME): that prefix or tree is SP_HOME; else the installation
# `module load softprompt` names (SOFTPROMPT_HOME). A copy inside a job script written by
# scripts/submit has SP_HOME set by that script instead.
if [[ -z ${SP_HOME:-} ]]; then
  case ${BASH_SOURCE[0]} in
    */share/softprompt/slurm/lib/softprompt-job.sh)
      SP_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd) && export SP_HOME ;;
    */slurm/lib/softprompt-job.sh)
      SP_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) && export SP_HOME ;;
    *) if [[ -n ${SOFTPROMPT_HOME:-} ]]; then SP_HOME=$SOFTPROMPT_HOME && export SP_HOME; fi ;;
  esac
fi

sp_log() {
  local line
  line="softprompt-job[${SLURM_JOB_ID:-nojob}${SLURM_RESTART_COUNT:+ restart $SLURM_RESTART_COUNT}] $(date '+%F %T'): $*"
  echo "$line" >&2
  if [[ -n ${SP_OUT:-} && -d ${SP_OUT:-} ]]; then echo "$line" >> "$SP_OUT/slurm-job.log"; fi
  return 0
}

sp_die() { sp_log "error: $*; not requeued"; exit "${SP_DIE_STATUS:-2}"; }

# sp_fail MESSAGE: for the functions scripts/submit shares: SP_ERR=MESSAGE, return 1.
sp_fail() { SP_ERR=$*; return 1; }

# sp_find_bin: sets (and exports) SP_BIN to the absolute path of the softprompt executable, by
# the one rule of docs/slurm.md ("Which softprompt"): SP_BIN when set (a path, or a command name
# looked up on PATH), else `softprompt` on PATH, else SP_HOME/build/softprompt (SP_HOME a source
# tree) or SP_HOME/bin/softprompt (SP_HOME an install prefix). Returns 1 with SP_ERR when there is
# none.
sp_find_bin() {
  local b
  if [[ -n ${SP_BIN:-} ]]; then
    b=$SP_BIN
    if [[ $b != */* ]]; then
      b=$(type -P -- "$b") || { sp_fail "SP_BIN=$SP_BIN: no such command on PATH"; return 1; }
    fi
    [[ -f $b && -x $b ]] || { sp_fail "SP_BIN=$SP_BIN: not an executable file"; return 1; }
  elif b=$(type -P softprompt); then
    :
  elif [[ -n ${SP_HOME:-} && -f $SP_HOME/build/softprompt && -x $SP_HOME/build/softprompt ]]; then
    b=$SP_HOME/build/softprompt
  elif [[ -n ${SP_HOME:-} && -f $SP_HOME/bin/softprompt && -x $SP_HOME/bin/softprompt ]]; then
    b=$SP_HOME/bin/softprompt
  else
    local tree="the softprompt of the job scripts is unknown (SP_HOME and SOFTPROMPT_HOME are not set)"
    [[ -n ${SP_HOME:-} ]] && tree="$SP_HOME/build/softprompt does not exist (SP_HOME as a source tree), nor $SP_HOME/bin/softprompt (SP_HOME as an install prefix)"
    sp_fail "softprompt executable not found: SP_BIN is not set, softprompt is not on PATH, and $tree; build it (cmake --build build), load its module (module load softprompt) or set SP_BIN to its path"
    return 1
  fi
  SP_BIN=$(realpath -s -- "$b") && export SP_BIN
}

# sp_job_config [FILE]: load the config file (if any) and check the settings.
sp_job_config() {
  # From here on a SIGUSR1 is recorded (and then forwarded) instead of killing the shell.
  trap _sp_on_usr1 USR1
  trap _sp_on_term TERM
  local file=${1:-${SP_CONFIG:-}}
  if [[ -n $file ]]; then
    [[ -f $file ]] || sp_die "config file $file not found"
    set -a
    # shellcheck disable=SC1090
    source "$file" || sp_die "config file $file has errors"
    set +a
    SP_CONFIG=$file
  fi
  : "${SP_MAX_RESTARTS:=3}" "${SP_TRAIN_ARGS:=}" "${SP_SRUN_ARGS:=}"
  sp_find_bin || sp_die "$SP_ERR"
  [[ $SP_MAX_RESTARTS =~ ^[0-9]+$ ]] || sp_die "SP_MAX_RESTARTS=$SP_MAX_RESTARTS is not a number"
}

# sp_require VAR...: every named variable is set and non-empty.
sp_require() {
  local v
  for v in "$@"; do [[ -n ${!v:-} ]] || sp_die "$v is not set (environment or config file)"; done
}

# --- the trainer's options --------------------------------------------------------------------

# sp_quote ARRAY: the words of the named array as one shell-quoted string ("" when empty).
sp_quote() {
  local -n _spq_a=$1
  local _spq_w _spq_s="" _spq_q
  for _spq_w in "${_spq_a[@]}"; do printf -v _spq_q '%q' "$_spq_w"; _spq_s+="${_spq_s:+ }$_spq_q"; done
  printf '%s' "$_spq_s"
}

# sp_train_args_clean ARRAY: checks the trainer options in the named array against those the
# job sets itself: --model, --train, --valid and --out come from SP_MODEL, SP_TRAIN, SP_VALID
# and SP_OUT, and every run uses --resume auto, so that a requeued or resubmitted run continues
# from its newest checkpoint. A --resume auto is dropped (the job adds it); anything else of
# these returns 1 with SP_ERR.
sp_train_args_clean() {
  local -n _spc_a=$1
  local -a _spc_keep=()
  local _spc_i _spc_w _spc_n _spc_v
  for (( _spc_i = 0; _spc_i < ${#_spc_a[@]}; _spc_i++ )); do
    _spc_w=${_spc_a[_spc_i]}; _spc_n=${_spc_w%%=*}
    case $_spc_n in
      --model|--train|--valid|--out)
        _spc_v=${_spc_n#--}
        sp_fail "$_spc_n in the trainer options: the job sets it itself, from SP_${_spc_v^^} (scripts/submit: its own $_spc_n option)"
        return 1 ;;
      --check)
        sp_fail "--check in the trainer options: the job trains (scripts/submit runs softprompt train --check itself before it submits)"
        return 1 ;;
      --resume)
        if [[ $_spc_w == *=* ]]; then _spc_v=${_spc_w#*=}
        else _spc_v=${_spc_a[_spc_i + 1]:-}; _spc_i=$((_spc_i + 1)); fi
        [[ $_spc_v == auto ]] && continue
        sp_fail "--resume ${_spc_v:-(no value)} in the trainer options: every run of the job uses --resume auto, so that a requeued or resubmitted run continues from the newest checkpoint in its output directory (with --resume ${_spc_v:-X} every requeue would start again); to start over, use a new output directory; to start from a saved prompt, use --init FILE.h5"
        return 1 ;;
    esac
    _spc_keep+=("$_spc_w")
  done
  _spc_a=("${_spc_keep[@]}")
}

# sp_args_override OUT BASE OVER [DROP]: the named array OUT becomes BASE without the options
# that OVER or DROP name, then OVER: the options of OVER win over those of BASE instead of being
# given twice (which softprompt refuses). An option of OVER takes a value when it is written
# --name=value or followed by a word that does not start with "--"; it is then removed from BASE
# with its value. DROP lists options (with values) to remove without replacing them.
sp_args_override() {
  local -n _spo_out=$1 _spo_base=$2 _spo_over=$3
  local -a _spo_none=() _spo_r=()
  if [[ -n ${4:-} ]]; then local -n _spo_drop=$4; else local -n _spo_drop=_spo_none; fi
  local -A _spo_valued=()
  local _spo_i _spo_w _spo_n
  for _spo_n in "${_spo_drop[@]}"; do _spo_valued[$_spo_n]=1; done
  for (( _spo_i = 0; _spo_i < ${#_spo_over[@]}; _spo_i++ )); do
    _spo_w=${_spo_over[_spo_i]}
    [[ $_spo_w == --?* ]] || continue
    _spo_n=${_spo_w%%=*}
    if [[ $_spo_w == *=* ]]; then
      _spo_valued[$_spo_n]=1
    elif (( _spo_i + 1 < ${#_spo_over[@]} )) && [[ ${_spo_over[_spo_i + 1]} != --* ]]; then
      _spo_valued[$_spo_n]=1; _spo_i=$((_spo_i + 1))
    else
      _spo_valued[$_spo_n]=0
    fi
  done
  for (( _spo_i = 0; _spo_i < ${#_spo_base[@]}; _spo_i++ )); do
    _spo_w=${_spo_base[_spo_i]}; _spo_n=${_spo_w%%=*}
    if [[ $_spo_w == --?* && -n ${_spo_valued[$_spo_n]+set} ]]; then
      if [[ $_spo_w != *=* && ${_spo_valued[$_spo_n]} == 1 ]]; then _spo_i=$((_spo_i + 1)); fi
      continue
    fi
    _spo_r+=("$_spo_w")
  done
  _spo_out=("${_spo_r[@]}" "${_spo_over[@]}")
}

# sp_train_cmd ARGS...: SP_CMD = this job's trainer command line (without the launcher): SP_BIN
# train with SP_MODEL, SP_TRAIN, SP_VALID, SP_OUT, --resume auto, then ARGS (the cleaned
# SP_TRAIN_ARGS). scripts/submit runs it with --check before it submits.
sp_train_cmd() {
  SP_CMD=("$SP_BIN" train --model "$SP_MODEL" --train "$SP_TRAIN")
  if [[ -n ${SP_VALID:-} ]]; then SP_CMD+=(--valid "$SP_VALID"); fi
  SP_CMD+=(--out "$SP_OUT" --resume auto "$@")
}

# --- running the job step with signal forwarding -------------------------------------------

SP_STEP_PID=""
SP_TRAPS=0
SP_GOT_USR1=0
SP_GOT_TERM=0

_sp_on_usr1() {
  SP_TRAPS=$((SP_TRAPS + 1))
  if (( SP_GOT_USR1 )); then sp_log "SIGUSR1 again: already forwarded, ignored"; return; fi
  SP_GOT_USR1=1
  if [[ -n $SP_STEP_PID ]] && kill -0 "$SP_STEP_PID" 2>/dev/null; then
    sp_log "SIGUSR1 (time limit near or requeue requested): forwarding to the job step (pid $SP_STEP_PID) to checkpoint and stop"
    kill -USR1 "$SP_STEP_PID" 2>/dev/null || true
  else
    sp_log "SIGUSR1 before the job step runs: it will not be started"
  fi
}

_sp_on_term() {
  # scancel, preemption and the hard time limit signal every process of the job, the ranks
  # included, so the trainer checkpoints by itself; srun is not signalled again (a SIGTERM to
  # srun would make it kill the step instead of letting it finish its checkpoint).
  SP_TRAPS=$((SP_TRAPS + 1))
  SP_GOT_TERM=1
  sp_log "SIGTERM (scancel, preemption or the hard time limit): waiting for the ranks to checkpoint"
}

# sp_run_step CMD...: runs CMD in the background, handles signals while waiting, and sets
# SP_STEP_STATUS to its exit status.
sp_run_step() {
  local rc n rc2
  trap _sp_on_usr1 USR1
  trap _sp_on_term TERM
  if (( SP_GOT_USR1 )); then SP_STEP_STATUS=$SP_EXIT_STOPPED; return; fi
  "$@" &
  SP_STEP_PID=$!
  while :; do
    n=$SP_TRAPS
    wait "$SP_STEP_PID"; rc=$?
    (( SP_TRAPS == n )) && break            # the step ended
    # A trapped signal interrupted `wait` (or arrived just as the step ended).
    kill -0 "$SP_STEP_PID" 2>/dev/null && continue
    wait "$SP_STEP_PID" 2>/dev/null; rc2=$?
    (( rc2 != 127 )) && rc=$rc2             # 127: already collected by the first wait
    break
  done
  SP_STEP_STATUS=$rc
}

# sp_newest_checkpoint: the file name of the newest checkpoint in SP_OUT/checkpoints ("" if none).
sp_newest_checkpoint() {
  local f newest=""
  for f in "$SP_OUT"/checkpoints/step-*.h5; do
    f=${f##*/}
    [[ $f =~ ^step-[0-9]+\.h5$ && $f > $newest ]] && newest=$f
  done
  printf '%s' "$newest"
}

# sp_own_requeues: how many times this script has requeued this job (SLURM_JOB_ID), counted in
# SP_OUT/slurm-job.log. SLURM_RESTART_COUNT also counts requeues by hand, by preemption and
# after a node failure, which are not this script's to limit.
sp_own_requeues() {
  local f=$SP_OUT/slurm-job.log
  if [[ -z ${SLURM_JOB_ID:-} || ! -f $f ]]; then echo 0; return; fi
  grep -c -e "^softprompt-job\[${SLURM_JOB_ID}[] ].*: checkpointed after SIGUSR1: requeueing job $SLURM_JOB_ID " "$f" || true
}

# sp_restarts_text: this run's place among the job's runs, for the log.
sp_restarts_text() {
  local restarts=${SLURM_RESTART_COUNT:-0} own
  own=$(sp_own_requeues)
  if (( restarts == 0 )); then
    echo "first run of the job; this script requeues it after a time-limit signal at most $SP_MAX_RESTARTS times (SP_MAX_RESTARTS)"
  else
    local other=$(( restarts > own ? restarts - own : 0 ))
    echo "restart $restarts of the job: $own by this script after a time-limit signal (at most $SP_MAX_RESTARTS, SP_MAX_RESTARTS), $other by hand (scontrol requeue), preemption or a node failure"
  fi
}

# sp_run_complete: the run in SP_OUT has reached its last step: the "steps" of its config.json
# (the run's total) is the step of its newest checkpoint, and its PEFT adapter exists. Prints
# the step.
sp_run_complete() {
  local steps newest
  [[ -f $SP_OUT/adapter/adapter_model.safetensors && -f $SP_OUT/config.json ]] || return 1
  steps=$(grep -oE '"steps": *[0-9]+' "$SP_OUT/config.json" | head -n 1 | grep -oE '[0-9]+$' || true)
  newest=$(sp_newest_checkpoint); newest=${newest#step-}; newest=${newest%.h5}
  [[ -n $steps && -n $newest ]] && (( 10#$newest == 10#$steps )) && echo "$((10#$steps))"
}

# sp_step_finished: after exit status 0, whether the run is finished, and how (for the log).
# srun exits 0 also when it could not launch the step at all (seen with a PMIx setup error:
# "task 0 launch failed"), so the status alone does not tell: the trainer must have written its
# adapter during this step (SP_STEP_MARK is touched just before it starts), or the run must be
# complete on disk (a run that had finished before: the trainer exits 0 and changes nothing).
sp_step_finished() {
  local adapter=$SP_OUT/adapter/adapter_model.safetensors last
  if [[ -z ${SP_STEP_MARK:-} || ( -f $adapter && ! $SP_STEP_MARK -nt $adapter ) ]]; then
    SP_FINISHED_HOW="softprompt train exited 0"
  elif last=$(sp_run_complete); then
    SP_FINISHED_HOW="softprompt train exited 0; the run had already reached its last step ($last) before this job step: nothing was trained or changed"
  else
    return 1
  fi
}

# sp_requeue_or_exit: acts on SP_STEP_STATUS as described at the top; never returns.
sp_requeue_or_exit() {
  local rc=$SP_STEP_STATUS
  local resume="resume by hand with \`scontrol requeue ${SLURM_JOB_ID:-JOBID}\` (while Slurm still lists the job) or by submitting the same job script and settings again: it continues from the newest checkpoint in $SP_OUT/checkpoints"
  if (( rc == 0 )); then
    if ! sp_step_finished; then
      sp_log "FAILED: srun exited 0 but softprompt wrote no adapter in $SP_OUT/adapter and the run there has not reached its last step: the job step did not run (see srun's errors above): not requeued"
      exit 1
    fi
    sp_log "finished: $SP_FINISHED_HOW; results in $SP_OUT"
    exit 0
  fi
  if (( rc != SP_EXIT_STOPPED )); then
    sp_log "FAILED: softprompt train exited with status $rc, not $SP_EXIT_STOPPED ('stopped after a checkpoint, resumable'): not requeued; the trainer's message is above in the job output"
    exit "$rc"
  fi
  if (( ! SP_GOT_USR1 )); then
    local why="a signal sent to the ranks directly"
    (( SP_GOT_TERM )) && why="SIGTERM (scancel, preemption or the hard time limit)"
    sp_log "stopped: softprompt train checkpointed and exited $rc after $why: not requeued by this script; $resume"
    exit "$rc"
  fi
  local newest; newest=$(sp_newest_checkpoint)
  if [[ $newest == "${SP_CKPT_BEFORE:-}" ]]; then
    sp_log "stopped: SIGUSR1 came before this run trained a single step (newest checkpoint still ${newest:-none}): the time limit leaves no time to train after the warning signal, and a requeue would only repeat that; not requeued; give the job a longer time limit or an earlier warning (--time, --signal=B:USR1@SECONDS; docs/slurm.md, \"Time limits and requeueing\"), then $resume"
    exit "$rc"
  fi
  sp_requeue "$rc" "" "; Slurm holds it for AuthInfo's cred_expire + 1 s (121 s by default), then it runs again and resumes from the newest checkpoint" "$resume"
}

# sp_requeue RC AT NEXT RESUME: the end of every job whose step stopped (status RC, 75) after
# this script's SIGUSR1 and made progress: `scontrol requeue` of the job, unless this script has
# requeued it SP_MAX_RESTARTS times already or it is not a Slurm batch job; then exit RC. AT
# says where the run stands (" at chunk 12", or ""), NEXT what the requeued job will do, RESUME
# how to resume by hand. The requeue line is what sp_own_requeues counts.
sp_requeue() {
  local rc=$1 at=$2 next=$3 resume=$4 own
  own=$(sp_own_requeues)
  if (( own >= SP_MAX_RESTARTS )); then
    sp_log "stopped: checkpointed after SIGUSR1$at, but the restart limit is reached (this script has requeued job ${SLURM_JOB_ID:-?} $own times, SP_MAX_RESTARTS=$SP_MAX_RESTARTS): not requeued; $resume"
    exit "$rc"
  fi
  if [[ -z ${SLURM_JOB_ID:-} ]]; then
    sp_log "stopped: checkpointed after SIGUSR1$at outside a Slurm batch job: nothing to requeue; $resume"
    exit "$rc"
  fi
  sp_log "checkpointed after SIGUSR1: requeueing job $SLURM_JOB_ID (requeue $((own + 1)) of at most $SP_MAX_RESTARTS by this script)$next"
  if scontrol requeue "$SLURM_JOB_ID"; then
    # Slurm now ends this run of the job by killing the batch shell; exit in case it is slow.
    trap - USR1 TERM
    sleep 30 & wait $!
    exit 0
  fi
  sp_log "scontrol requeue $SLURM_JOB_ID failed (JobRequeue=0 in slurm.conf, or --no-requeue?): not requeued; $resume"
  exit "$rc"
}

# sp_launcher: SP_LAUNCH, what starts the job step: srun (with SP_SRUN_ARGS), or SP_LAUNCHER.
sp_launcher() {
  local -a srun_extra
  eval "srun_extra=($SP_SRUN_ARGS)" || sp_die "SP_SRUN_ARGS cannot be parsed: $SP_SRUN_ARGS"
  # Slurm 22.05's srun does not take --cpus-per-task from the allocation; this passes it on.
  if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
  if [[ -n ${SP_LAUNCHER:-} ]]; then
    eval "SP_LAUNCH=($SP_LAUNCHER)" || sp_die "SP_LAUNCHER cannot be parsed: $SP_LAUNCHER"
  else
    SP_LAUNCH=(srun --mpi=pmix --kill-on-bad-exit=1 "${srun_extra[@]}")
  fi
}

# --- the training job -------------------------------------------------------------------------

# sp_job_train: the whole job (configuration already loaded by sp_job_config).
sp_job_train() {
  sp_require SP_MODEL SP_TRAIN SP_OUT
  mkdir -p "$SP_OUT" || sp_die "cannot create output directory $SP_OUT"
  local -a extra cmd
  eval "extra=($SP_TRAIN_ARGS)" || sp_die "SP_TRAIN_ARGS cannot be parsed: $SP_TRAIN_ARGS"
  sp_train_args_clean extra || sp_die "SP_TRAIN_ARGS: $SP_ERR"
  sp_launcher
  sp_train_cmd "${extra[@]}"
  cmd=("${SP_LAUNCH[@]}" "${SP_CMD[@]}")
  sp_log "job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+ (array ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} ranks on ${SLURM_JOB_NUM_NODES:-?} node(s), ${SLURM_CPUS_PER_TASK:-1} threads per rank; $(sp_restarts_text)"
  sp_log "running: ${cmd[*]}"
  SP_CKPT_BEFORE=$(sp_newest_checkpoint)
  SP_STEP_MARK=$SP_OUT/.slurm-step-start
  : > "$SP_STEP_MARK"
  sp_run_step "${cmd[@]}"
  sp_requeue_or_exit
}

# --- the prediction job (bulk inference) ------------------------------------------------------
# SP_OUT is the job's directory (slurm-job.log, logs); the predictions go to SP_PREDICTIONS
# (default SP_OUT/predictions.jsonl, or .csv / .tsv after --format in SP_PREDICT_ARGS), built in
# SP_PREDICTIONS.partial with SP_PREDICTIONS.progress.json: a stopped predict exits 75 after a
# completed chunk and the requeued job continues from there (docs/inference.md, "Bulk inference
# on Slurm").

# sp_predict_args_clean ARRAY: refuses in the named array the predict options the job sets itself.
sp_predict_args_clean() {
  local -n _spp_a=$1
  local _spp_w _spp_n
  for _spp_w in "${_spp_a[@]}"; do
    _spp_n=${_spp_w%%=*}
    case $_spp_n in
      --model|--prompt|--data|--input|--out)
        sp_fail "$_spp_n in the predict options: the job sets it itself (SP_MODEL, SP_PROMPTS, SP_DATA or SP_INPUT, SP_PREDICTIONS; scripts/submit --predict: its own $_spp_n option)"
        return 1 ;;
      --check)
        sp_fail "--check in the predict options: the job predicts (scripts/submit runs softprompt predict --check itself before it submits)"
        return 1 ;;
    esac
  done
}

# sp_predictions_path ARGS...: SP_PREDICTIONS unless set: SP_OUT/predictions.<format of ARGS>.
sp_predictions_path() {
  local ext=jsonl i
  local -a a=("$@")
  for (( i = 0; i < ${#a[@]}; i++ )); do
    case ${a[i]} in
      --format=*) ext=${a[i]#--format=} ;;
      --format) ext=${a[i + 1]:-jsonl} ;;
    esac
  done
  : "${SP_PREDICTIONS:=$SP_OUT/predictions.$ext}"
}

# sp_predict_cmd ARGS...: SP_CMD = the job's predict command line (without the launcher).
sp_predict_cmd() {
  local -a prompts
  local p
  eval "prompts=($SP_PROMPTS)" || { sp_fail "SP_PROMPTS cannot be parsed: $SP_PROMPTS"; return 1; }
  (( ${#prompts[@]} )) || { sp_fail "SP_PROMPTS names no prompt"; return 1; }
  SP_CMD=("$SP_BIN" predict --model "$SP_MODEL")
  for p in "${prompts[@]}"; do SP_CMD+=(--prompt "$p"); done
  if [[ -n ${SP_DATA:-} ]]; then SP_CMD+=(--data "$SP_DATA"); else SP_CMD+=(--input "$SP_INPUT"); fi
  sp_predictions_path "$@"
  SP_CMD+=(--out "$SP_PREDICTIONS" "$@")
}

# sp_predict_chunks: chunks done according to the progress record (0 without one).
sp_predict_chunks() {
  local f=$SP_PREDICTIONS.progress.json
  [[ -f $f ]] && grep -oE '"chunks_done":[0-9]+' "$f" | grep -oE '[0-9]+$' || echo 0
}

# sp_predict_requeue_or_exit: acts on SP_STEP_STATUS (as sp_requeue_or_exit does for training);
# never returns.
sp_predict_requeue_or_exit() {
  local rc=$SP_STEP_STATUS now
  local resume="resume by hand with \`scontrol requeue ${SLURM_JOB_ID:-JOBID}\` or by submitting the same job again: it continues after the last completed chunk of $SP_PREDICTIONS.partial"
  if (( rc == 0 )); then
    [[ -f $SP_PREDICTIONS ]] || { sp_log "FAILED: srun exited 0 but $SP_PREDICTIONS was not written: the job step did not run (see srun's errors above): not requeued"; exit 1; }
    sp_log "finished: softprompt predict exited 0; predictions in $SP_PREDICTIONS"
    exit 0
  fi
  if (( rc != SP_EXIT_STOPPED )); then
    sp_log "FAILED: softprompt predict exited with status $rc, not $SP_EXIT_STOPPED ('stopped after a chunk, resumable'): not requeued; its message is above in the job output"
    exit "$rc"
  fi
  if (( ! SP_GOT_USR1 )); then
    sp_log "stopped: softprompt predict exited $rc after a signal not sent by this script: not requeued; $resume"
    exit "$rc"
  fi
  now=$(sp_predict_chunks)
  if (( now <= ${SP_CHUNKS_BEFORE:-0} )); then
    sp_log "stopped: SIGUSR1 came before this run completed a chunk (still $now): the time limit leaves no time to predict after the warning signal; not requeued; give the job a longer time limit, an earlier warning or a smaller --chunk, then $resume"
    exit "$rc"
  fi
  sp_requeue "$rc" " at chunk $now" " at chunk $now; it continues from there" "$resume"
}

# sp_job_predict: the whole prediction job (configuration loaded by sp_job_config).
sp_job_predict() {
  sp_require SP_MODEL SP_PROMPTS SP_OUT
  [[ -n ${SP_DATA:-} || -n ${SP_INPUT:-} ]] || sp_die "SP_DATA or SP_INPUT is not set (environment or config file)"
  [[ -z ${SP_DATA:-} || -z ${SP_INPUT:-} ]] || sp_die "both SP_DATA and SP_INPUT are set: give one"
  mkdir -p "$SP_OUT" || sp_die "cannot create output directory $SP_OUT"
  local -a extra cmd
  eval "extra=(${SP_PREDICT_ARGS:-})" || sp_die "SP_PREDICT_ARGS cannot be parsed: $SP_PREDICT_ARGS"
  sp_predict_args_clean extra || sp_die "SP_PREDICT_ARGS: $SP_ERR"
  sp_launcher
  sp_predict_cmd "${extra[@]}" || sp_die "$SP_ERR"
  cmd=("${SP_LAUNCH[@]}" "${SP_CMD[@]}")
  sp_log "job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} ranks, ${SLURM_CPUS_PER_TASK:-1} threads per rank; $(sp_restarts_text)"
  if [[ -f $SP_PREDICTIONS ]]; then
    sp_log "finished: $SP_PREDICTIONS exists already (an earlier run of this job completed it): nothing to do"
    exit 0
  fi
  SP_CHUNKS_BEFORE=$(sp_predict_chunks)
  sp_log "running: ${cmd[*]}"
  sp_run_step "${cmd[@]}"
  sp_predict_requeue_or_exit
}

# --- sweeps -----------------------------------------------------------------------------------

# sp_sweep_row FILE INDEX: prints "key<TAB>value" lines of data row INDEX (0-based: the first
# row after the header is 0) of a sweep file. Format: a header line naming the columns, then
# rows; columns separated by tabs when the header has a tab (values may then contain spaces),
# else by spaces; blank lines and lines starting with # ignored.
sp_sweep_row() {
  awk -v want="$2" '
    function trim(x) { gsub(/^[ \t]+|[ \t]+$/, "", x); return x }
    /^[ \t]*(#|$)/ { next }
    !have_header { sep = index($0, "\t") ? "\t+" : "[ \t]+"
                   n = split(trim($0), h, sep); have_header = 1; next }
    { if (row++ != want) next
      m = split(trim($0), v, sep)
      for (i = 1; i <= m; i++) v[i] = trim(v[i])
      if (m != n) { printf "row %d has %d columns, the header %d\n", want, m, n > "/dev/stderr"; err = 1; exit 3 }
      for (i = 1; i <= n; i++) printf "%s\t%s\n", h[i], v[i]
      found = 1; exit }
    END { if (err) exit 3; if (!found) exit 4 }' "$1"
}

# sp_sweep_rows FILE: the number of data rows.
sp_sweep_rows() { awk '/^[ \t]*(#|$)/ { next } { n++ } END { print (n > 0 ? n - 1 : 0) }' "$1"; }

# sp_json_str S: S as a JSON string.
sp_json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}; s=${s//$'\t'/\\t}; s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}
  printf '"%s"' "$s"
}

# sp_sweep_task ID: the settings of sweep row ID (0-based) of SP_SWEEP, without touching any
# file: SP_TASK_OUT (SP_OUT/task-<iii>[-name]), SP_TASK_TRAIN, SP_TASK_VALID, SP_TASK_PLEN (the
# row's prompt_length or ""), SP_TASK_ARGS (an array: SP_TRAIN_ARGS with the row's options
# winning over the common ones), SP_TASK_JSON (the row for sweep-row.json). Returns 1 with
# SP_ERR on a bad row.
sp_sweep_task() {
  local id=$1 table key value data="" name="" args=""
  # shellcheck disable=SC2034  # common and drop are read by sp_args_override (by name)
  local -a common=() row=() drop=() extra=()
  SP_TASK_PLEN="" SP_TASK_JSON=""
  table=$(sp_sweep_row "$SP_SWEEP" "$id" 2>&1) || { sp_fail "$SP_SWEEP: cannot read row $id${table:+: $table}"; return 1; }
  while IFS=$'\t' read -r key value; do
    SP_TASK_JSON+="${SP_TASK_JSON:+, }$(sp_json_str "$key"): $(sp_json_str "$value")"
    case $key in
      prompt_length) [[ $value == - ]] || SP_TASK_PLEN=$value ;;
      data) [[ $value == - ]] || data=$value ;;
      name) [[ $value == - ]] || name=$value ;;
      args) [[ $value == - ]] || args=$value ;;
      # "-": the trainer's default, so a common value of that option is dropped too.
      *) if [[ $value == - ]]; then drop+=("--${key//_/-}"); else row+=("--${key//_/-}" "$value"); fi ;;
    esac
  done <<< "$table"
  if [[ -n $SP_TASK_PLEN && ! $SP_TASK_PLEN =~ ^[1-9][0-9]*$ ]]; then
    sp_fail "$SP_SWEEP row $id: prompt_length '$SP_TASK_PLEN' is not a positive number"; return 1
  fi
  eval "extra=($args)" 2>/dev/null || { sp_fail "$SP_SWEEP row $id: its args cannot be parsed: $args"; return 1; }
  row+=("${extra[@]}")
  eval "common=(${SP_TRAIN_ARGS:-})" 2>/dev/null || { sp_fail "SP_TRAIN_ARGS cannot be parsed: $SP_TRAIN_ARGS"; return 1; }
  sp_args_override SP_TASK_ARGS common row drop
  sp_train_args_clean SP_TASK_ARGS || { SP_ERR="$SP_SWEEP row $id: $SP_ERR"; return 1; }
  # The dataset: the row's `data` prefix (PREFIX-train.h5, PREFIX-valid.h5 if present), else
  # SP_TRAIN / SP_VALID; "{prompt_length}" in either is replaced by the row's prompt_length.
  local train valid
  if [[ -n $data ]]; then
    train="$data-train.h5"; valid="$data-valid.h5"
    [[ -f ${valid//\{prompt_length\}/$SP_TASK_PLEN} ]] || valid=""
  else
    [[ -n ${SP_TRAIN:-} ]] || { sp_fail "$SP_SWEEP row $id has no data column value and SP_TRAIN is not set"; return 1; }
    train=$SP_TRAIN; valid=${SP_VALID:-}
  fi
  SP_TASK_TRAIN=${train//\{prompt_length\}/$SP_TASK_PLEN}
  SP_TASK_VALID=${valid//\{prompt_length\}/$SP_TASK_PLEN}
  SP_TASK_OUT=$SP_OUT/$(printf 'task-%03d' "$id")${name:+-$name}
}

# sp_sweep_check_plen ID: the prompt length is fixed by the dataset (softprompt prepare
# --prompt-length N): a row's prompt_length must be the training set's soft-token count.
sp_sweep_check_plen() {
  [[ -n $SP_TASK_PLEN && -f $SP_TASK_TRAIN ]] || return 0
  local have
  have=$("$SP_BIN" info "$SP_TASK_TRAIN" 2>/dev/null | awk '/^soft tokens/ {print $3}')
  [[ $have == "$SP_TASK_PLEN" ]] && return 0
  sp_fail "$SP_SWEEP row $1 asks for prompt_length $SP_TASK_PLEN but $SP_TASK_TRAIN has ${have:-an unknown number of} soft tokens (prepare one dataset per length: softprompt prepare --prompt-length $SP_TASK_PLEN)"
}

# sp_job_sweep: one task of a job array. SP_SWEEP names the sweep file, SP_OUT the sweep's
# directory; task i trains row i into SP_OUT/task-<iii> (see docs/slurm.md, "Sweeps").
sp_job_sweep() {
  sp_require SP_SWEEP SP_OUT SP_MODEL
  [[ -f $SP_SWEEP ]] || sp_die "sweep file $SP_SWEEP not found"
  local id=${SLURM_ARRAY_TASK_ID:-${SP_SWEEP_TASK:-}} rows
  rows=$(sp_sweep_rows "$SP_SWEEP")
  [[ $id =~ ^[0-9]+$ ]] || sp_die "not an array task (SLURM_ARRAY_TASK_ID unset): submit with sbatch --array=0-$((rows - 1))"
  (( id < rows )) || sp_die "array task $id but $SP_SWEEP has only $rows rows (tasks 0-$((rows - 1)))"
  sp_sweep_task "$id" || sp_die "$SP_ERR"
  SP_OUT=$SP_TASK_OUT SP_TRAIN=$SP_TASK_TRAIN SP_VALID=$SP_TASK_VALID
  mkdir -p "$SP_OUT" || sp_die "cannot create $SP_OUT"
  printf '{"task": %d, %s, "train": %s, "valid": %s}\n' "$id" "$SP_TASK_JSON" \
    "$(sp_json_str "$SP_TRAIN")" "$(sp_json_str "$SP_VALID")" > "$SP_OUT/sweep-row.json"
  sp_log "sweep $SP_SWEEP row $id -> $SP_OUT"
  sp_sweep_check_plen "$id" || SP_DIE_STATUS=1 sp_die "$SP_ERR"
  SP_TRAIN_ARGS=$(sp_quote SP_TASK_ARGS)
  sp_job_train
}
