# shellcheck shell=bash
# Shared logic of the softprompt Slurm job scripts (sourced by slurm/*.sbatch; scripts/submit
# copies it into the job script it writes). bash 4+; needs only Slurm's own commands.
#
# What a job does (sp_job_train):
#   1. reads its configuration: the environment, then an optional config file (the job script's
#      first argument or SP_CONFIG) of bash KEY=VALUE lines;
#   2. runs `srun --mpi=pmix softprompt train ... --resume auto` in the background and waits
#      for it with `wait`, so that signals are handled at once;
#   3. on SIGUSR1 (sent to this batch shell by `#SBATCH --signal=B:USR1@<seconds>` before the
#      time limit, or by hand: `scancel --batch --signal=USR1 JOBID`) forwards SIGUSR1 to the
#      job step (srun passes it to every rank); the trainer finishes its current step, writes a
#      checkpoint and exits with status 75 ("stopped, resumable");
#   4. decides from the step's exit status:
#        0   finished: the job ends COMPLETED;
#        75  after our SIGUSR1 and with SLURM_RESTART_COUNT < SP_MAX_RESTARTS: `scontrol
#            requeue` puts the job back in the queue; when it runs again the same script resumes
#            from the newest checkpoint in SP_OUT (--resume auto);
#        75  otherwise (SIGTERM from scancel, preemption or the hard time limit; or the restart
#            limit reached): not requeued; the log says how to resume by hand;
#        any other status: a real failure (bad path, bad option, a crashed rank): not requeued,
#            the job ends FAILED with the trainer's status, the log says why.
#   Every decision is logged to the job's output file and appended to SP_OUT/slurm-job.log.
#
# Configuration (environment variables or config-file lines; see docs/slurm.md):
#   SP_MODEL        Hugging Face model directory (required)
#   SP_TRAIN        training set .h5 (required)
#   SP_VALID        validation set .h5 (optional)
#   SP_OUT          output directory: checkpoints/, metrics.jsonl, adapter/ ... (required)
#   SP_TRAIN_ARGS   more `softprompt train` options, shell-quoted ("--steps 2000 --lr 0.3")
#   SP_BIN          the softprompt executable (default: `softprompt` on PATH)
#   SP_MAX_RESTARTS requeues allowed after time-limit signals (default 3)
#   SP_SRUN_ARGS    more srun options, shell-quoted (e.g. "--cpu-bind=cores")
#   SP_LAUNCHER     replaces `srun --mpi=pmix --kill-on-bad-exit=1 $SP_SRUN_ARGS`, e.g. "mpirun"
#                   where Open MPI lacks PMIx support (mpirun reads the allocation from Slurm)
# A requeued job waits in the queue for at least AuthInfo's cred_expire + 1 seconds (Slurm's
# default: 121 s) before it can start again; `scontrol update JobId=N StartTime=now` releases
# it earlier (docs/slurm.md, "Time limits and requeueing").

SP_EXIT_STOPPED=75

sp_log() {
  local line
  line="softprompt-job[${SLURM_JOB_ID:-nojob}${SLURM_RESTART_COUNT:+ restart $SLURM_RESTART_COUNT}] $(date '+%F %T'): $*"
  echo "$line" >&2
  if [[ -n ${SP_OUT:-} && -d ${SP_OUT:-} ]]; then echo "$line" >> "$SP_OUT/slurm-job.log"; fi
  return 0
}

sp_die() { sp_log "error: $*; not requeued"; exit "${SP_DIE_STATUS:-2}"; }

# sp_job_config [FILE]: load the config file (if any) and check the settings.
sp_job_config() {
  # From here on a SIGUSR1 is recorded (and then forwarded) instead of killing the shell.
  trap _sp_on_usr1 USR1
  trap _sp_on_term TERM
  local file=${1:-${SP_CONFIG:-}}
  if [[ -n $file ]]; then
    [[ -f $file ]] || sp_die "config file $file not found"
    # shellcheck disable=SC1090
    set -a; source "$file" || sp_die "config file $file has errors"; set +a
    SP_CONFIG=$file
  fi
  : "${SP_BIN:=softprompt}" "${SP_MAX_RESTARTS:=3}" "${SP_TRAIN_ARGS:=}" "${SP_SRUN_ARGS:=}"
  command -v "$SP_BIN" >/dev/null 2>&1 \
    || sp_die "softprompt executable '$SP_BIN' not found (set SP_BIN or put it on PATH)"
  [[ $SP_MAX_RESTARTS =~ ^[0-9]+$ ]] || sp_die "SP_MAX_RESTARTS=$SP_MAX_RESTARTS is not a number"
}

# sp_require VAR...: every named variable is set and non-empty.
sp_require() {
  local v
  for v in "$@"; do [[ -n ${!v:-} ]] || sp_die "$v is not set (environment or config file)"; done
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

# sp_requeue_or_exit: acts on SP_STEP_STATUS as described at the top; never returns.
sp_requeue_or_exit() {
  local rc=$SP_STEP_STATUS restarts=${SLURM_RESTART_COUNT:-0}
  local resume="resume by hand with \`scontrol requeue ${SLURM_JOB_ID:-JOBID}\` (while Slurm still lists the job) or by submitting the same job script and settings again: it continues from the newest checkpoint in $SP_OUT/checkpoints"
  if (( rc == 0 )); then
    # srun also exits 0 when the step could not be launched at all (seen with a PMIx setup
    # error: "task 0 launch failed"); a finished run always (re)writes the PEFT adapter.
    local adapter=$SP_OUT/adapter/adapter_model.safetensors
    if [[ -n ${SP_STEP_MARK:-} ]] && ! [[ -f $adapter && ! $SP_STEP_MARK -nt $adapter ]]; then
      sp_log "FAILED: srun exited 0 but softprompt wrote no adapter in $SP_OUT/adapter: the job step did not run (see srun's errors above): not requeued"
      exit 1
    fi
    sp_log "finished: softprompt train exited 0; results in $SP_OUT"
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
  if (( restarts >= SP_MAX_RESTARTS )); then
    sp_log "stopped: checkpointed after SIGUSR1, but the restart limit is reached (restarted $restarts times, SP_MAX_RESTARTS=$SP_MAX_RESTARTS): not requeued; $resume"
    exit "$rc"
  fi
  if [[ -z ${SLURM_JOB_ID:-} ]]; then
    sp_log "stopped: checkpointed after SIGUSR1 outside a Slurm batch job: nothing to requeue; $resume"
    exit "$rc"
  fi
  sp_log "checkpointed after SIGUSR1: requeueing job $SLURM_JOB_ID (restart $((restarts + 1)) of at most $SP_MAX_RESTARTS); Slurm holds it for AuthInfo's cred_expire + 1 s (121 s by default), then it runs again and resumes from the newest checkpoint"
  if scontrol requeue "$SLURM_JOB_ID"; then
    # Slurm now ends this run of the job by killing the batch shell; exit in case it is slow.
    trap - USR1 TERM
    sleep 30 & wait $!
    exit 0
  fi
  sp_log "scontrol requeue $SLURM_JOB_ID failed (JobRequeue=0 in slurm.conf, or --no-requeue?): not requeued; $resume"
  exit "$rc"
}

# --- the training job -------------------------------------------------------------------------

# sp_job_train: the whole job (configuration already loaded by sp_job_config).
sp_job_train() {
  sp_require SP_MODEL SP_TRAIN SP_OUT
  mkdir -p "$SP_OUT" || sp_die "cannot create output directory $SP_OUT"
  local -a extra srun_extra cmd
  eval "extra=($SP_TRAIN_ARGS)" || sp_die "SP_TRAIN_ARGS cannot be parsed: $SP_TRAIN_ARGS"
  eval "srun_extra=($SP_SRUN_ARGS)" || sp_die "SP_SRUN_ARGS cannot be parsed: $SP_SRUN_ARGS"
  # Slurm 22.05's srun does not take --cpus-per-task from the allocation; this passes it on.
  [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK
  if [[ -n ${SP_LAUNCHER:-} ]]; then
    eval "cmd=($SP_LAUNCHER)" || sp_die "SP_LAUNCHER cannot be parsed: $SP_LAUNCHER"
  else
    cmd=(srun --mpi=pmix --kill-on-bad-exit=1 "${srun_extra[@]}")
  fi
  cmd+=("$SP_BIN" train --model "$SP_MODEL" --train "$SP_TRAIN")
  [[ -n ${SP_VALID:-} ]] && cmd+=(--valid "$SP_VALID")
  cmd+=(--out "$SP_OUT" --resume auto "${extra[@]}")
  sp_log "job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+ (array ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} ranks on ${SLURM_JOB_NUM_NODES:-?} node(s), ${SLURM_CPUS_PER_TASK:-1} threads per rank, restart ${SLURM_RESTART_COUNT:-0} of at most $SP_MAX_RESTARTS"
  sp_log "running: ${cmd[*]}"
  SP_STEP_MARK=$SP_OUT/.slurm-step-start
  : > "$SP_STEP_MARK"
  sp_run_step "${cmd[@]}"
  sp_requeue_or_exit
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

# sp_job_sweep: one task of a job array. SP_SWEEP names the sweep file, SP_OUT the sweep's
# directory; task i trains row i into SP_OUT/task-<iii> (see docs/slurm.md, "Sweeps").
sp_job_sweep() {
  sp_require SP_SWEEP SP_OUT SP_MODEL
  [[ -f $SP_SWEEP ]] || sp_die "sweep file $SP_SWEEP not found"
  local id=${SLURM_ARRAY_TASK_ID:-${SP_SWEEP_TASK:-}}
  [[ $id =~ ^[0-9]+$ ]] || sp_die "not an array task (SLURM_ARRAY_TASK_ID unset): submit with sbatch --array=0-$(( $(sp_sweep_rows "$SP_SWEEP") - 1 ))"
  local rows; rows=$(sp_sweep_rows "$SP_SWEEP")
  (( id < rows )) || sp_die "array task $id but $SP_SWEEP has only $rows rows (tasks 0-$((rows - 1)))"
  local table key value plen="" data="" name="" args="" json="" train valid
  table=$(sp_sweep_row "$SP_SWEEP" "$id") || sp_die "cannot read row $id of $SP_SWEEP"
  local -a opts=()
  while IFS=$'\t' read -r key value; do
    json+="${json:+, }\"$key\": \"${value//\"/\\\"}\""
    [[ $value == - ]] && value=""          # "-": leave the trainer's default
    case $key in
      prompt_length) plen=$value ;;
      data) data=$value ;;
      name) name=$value ;;
      args) args=$value ;;
      *) [[ -n $value ]] && opts+=("--${key//_/-}" "$value") ;;
    esac
  done <<< "$table"
  # The dataset: the row's `data` prefix (PREFIX-train.h5, PREFIX-valid.h5 if present), else
  # SP_TRAIN / SP_VALID; "{prompt_length}" in either is replaced by the row's prompt_length.
  if [[ -n $data ]]; then
    train="$data-train.h5"; valid="$data-valid.h5"
    [[ -f ${valid//\{prompt_length\}/$plen} ]] || valid=""
  else
    sp_require SP_TRAIN
    train=$SP_TRAIN; valid=${SP_VALID:-}
  fi
  SP_TRAIN=${train//\{prompt_length\}/$plen}
  SP_VALID=${valid//\{prompt_length\}/$plen}
  SP_SWEEP_DIR=$SP_OUT
  SP_OUT=$SP_SWEEP_DIR/$(printf 'task-%03d' "$id")${name:+-$name}
  mkdir -p "$SP_OUT" || sp_die "cannot create $SP_OUT"
  printf '{"task": %d, %s, "train": "%s", "valid": "%s"}\n' "$id" "$json" "$SP_TRAIN" "$SP_VALID" \
    > "$SP_OUT/sweep-row.json"
  sp_log "sweep $SP_SWEEP row $id -> $SP_OUT"
  # The prompt length is fixed by the dataset (softprompt prepare --prompt-length N); check it.
  if [[ -n $plen && -f $SP_TRAIN ]]; then
    local have
    have=$("$SP_BIN" info "$SP_TRAIN" 2>/dev/null | awk '/^soft tokens/ {print $3}')
    [[ $have == "$plen" ]] || SP_DIE_STATUS=1 sp_die "row $id asks for prompt_length $plen but $SP_TRAIN has ${have:-unknown} soft tokens (prepare one dataset per length: softprompt prepare --prompt-length $plen)"
  fi
  local q o
  for o in "${opts[@]}"; do printf -v q '%q' "$o"; SP_TRAIN_ARGS+=" $q"; done
  SP_TRAIN_ARGS+=" $args"
  sp_job_train
}
