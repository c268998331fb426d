# shellcheck shell=bash disable=SC2034  # variables set here are the interface to the launchers
# Shared shell functions of the launchers: run_and_time.sh, run.sub and run_with_docker.sh source this.
#
# One place decides how a run is configured, so the three launchers cannot drift:
#   ds2_load_config      SYSTEM -> config_<SYSTEM>.sh, sourced; shell-level variables defaulted and validated
#   ds2_choose_python    .venv/bin/python on a bare machine (set-up first), $PYTHON (python3) in the image
#   ds2_system_name      this machine -> SYSTEM_NAME, its results folder (one system per machine)
#   ds2_resolve_data     DATASET/DATA_DIR -> manifest paths and the command that prepares them
#   ds2_train_args       TrainConfig variables -> validated `--flag=value` list (scripts/train_flags.py)
#   ds2_check_result_index  RESULT_INDEX=n over a result that holds a log: exit 2 before anything is written
#   ds2_preflight        the training's own checks (flags, device, backend, every manifest row), no log
#   ds2_reserve_result   atomically claims results/<system>/result_<n>.txt (never reused, never shared)
#   ds2_write_resolved   the resolved configuration of one run, beside its result
# Errors exit with status 2 and name the variable. Functions use the ds2_ prefix; variables they set are
# documented where they are set.

DS2_PROG=${DS2_PROG:-$(basename "$0")}
# Shell-level variables (the rest are TrainConfig fields, listed by `scripts/train_flags.py --names`).
DS2_SHELL_VARS="SYSTEM SYSTEM_NAME NPROC NNODES RDZV_ENDPOINT RESULT_INDEX DATASET DATA_DIR TRAIN_SUBSETS EVAL_SUBSETS
SYNTH_HOURS SYNTH_SEED NEXP SEED_BASE RESULTS_DIR RUNS_DIR CLEAR_CACHES GLOBAL_BATCH_SIZE"
LIBRISPEECH_TRAIN_SUBSETS="train-clean-100,train-clean-360,train-other-500"
LIBRISPEECH_EVAL_SUBSETS="dev-clean"

ds2_fail() { echo "$DS2_PROG: $*" >&2; exit 2; }
ds2_note() { echo "$DS2_PROG: $*" >&2; }

# --- validation: each names the variable, so `SORTAGRAD=yes` says which line of which config to fix ---
ds2_check_bool() {   # VAR...: exactly true or false (AMP=:true style mistakes must not pass silently)
  local var
  for var in "$@"; do
    case "${!var-}" in true|false) ;; *) ds2_fail "$var='${!var-}': must be exactly 'true' or 'false'";; esac
  done
}
ds2_check_int() {    # VAR MIN: a decimal integer >= MIN
  local value=${!1-}
  [[ $value =~ ^[0-9]+$ ]] || ds2_fail "$1='$value': must be a whole number"
  (( 10#$value >= $2 )) || ds2_fail "$1='$value': must be at least $2"
}
ds2_check_positive() {   # VAR: a decimal number > 0
  local value=${!1-}
  [[ $value =~ ^[0-9]*\.?[0-9]+$ && $value =~ [1-9] ]] || ds2_fail "$1='$value': must be a number greater than 0"
}
ds2_check_enum() {   # VAR CHOICE...
  local var=$1 choice; shift
  for choice in "$@"; do [ "${!var-}" = "$choice" ] && return 0; done
  local IFS='|'; ds2_fail "$var='${!var-}': must be one of $*"
}

# The global batch in the shell (hyperparameters.sh picks the learning rate by it before any Python runs);
# the training derives its own from the same variables in benchmark/plan.py and logs it.
ds2_global_batch() {
  ds2_check_int BATCH_SIZE 1; ds2_check_int NPROC 1; ds2_check_int NNODES 1
  GLOBAL_BATCH_SIZE=$((BATCH_SIZE * NPROC * NNODES))
}

# --- system selection ---
ds2_gpu_names() {    # one line per NVIDIA GPU (nothing without nvidia-smi or driver: its errors are no names)
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  local names; names=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) && echo "$names" || true
}
ds2_gpu_count() {    # GPUs a run may use: nvidia-smi's, fewer where CUDA_VISIBLE_DEVICES lists fewer
  local count visible=0; count=$(ds2_gpu_names | grep -c . || true)
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    [ -z "$CUDA_VISIBLE_DEVICES" ] || visible=$(tr ',' '\n' <<< "$CUDA_VISIBLE_DEVICES" | grep -c . || true)
    (( visible >= count )) || count=$visible
  fi
  echo "$count"
}
ds2_default_system() {   # CPU without a GPU; else the DGX config of the GPU model
  local first; first=$(ds2_gpu_names | head -n 1)
  (( $(ds2_gpu_count) > 0 )) || first=""
  case "$first" in
    "") echo CPU ;;
    *H100*|*H200*|*H800*) echo DGXH100 ;;
    *A100*|*A800*) echo DGXA100 ;;
    *V100*) echo DGX1 ;;
    *) ds2_fail "no config matches the visible GPU '$first': choose one, e.g. SYSTEM=DGXA100 NPROC=$(ds2_gpu_count)" ;;
  esac
}

# Sets CONFIG_FILE, SYSTEM (the name from the file name: config_DGX1.sh -> DGX1) and every variable the
# config defines; exports all of them so scripts/train_flags.py and the training see the same values.
ds2_load_config() {
  local requested=${SYSTEM:-}
  [ -n "$requested" ] || requested=$(ds2_default_system) || exit 2
  if [[ $requested == */* || $requested == *.sh ]]; then
    CONFIG_FILE=$requested          # a path to a config file of one's own
  else
    [[ $requested =~ ^[A-Za-z0-9_-]+$ ]] || ds2_fail "SYSTEM='$requested': letters, digits, '_' and '-' only"
    CONFIG_FILE=./config_${requested}.sh
  fi
  if [ ! -f "$CONFIG_FILE" ]; then
    local known="" file
    for file in "$(dirname "$CONFIG_FILE")"/config_*.sh; do
      [ -f "$file" ] && file=$(basename "$file" .sh) && known+=${known:+ }${file#config_}
    done
    ds2_fail "SYSTEM='$requested': no $CONFIG_FILE (known systems: ${known:-none})"
  fi
  SYSTEM=$(basename "$CONFIG_FILE" .sh); SYSTEM=${SYSTEM#config_}
  [[ $SYSTEM =~ ^[A-Za-z0-9_-]+$ ]] || ds2_fail "config file name '$CONFIG_FILE' must be config_<NAME>.sh"
  : "${NNODES:=1}"
  set -a   # export everything the config sets: scripts/train_flags.py and the training read the environment
  # shellcheck source=/dev/null
  source "$CONFIG_FILE"
  set +a
  : "${NPROC:=1}" "${NEXP:=1}" "${SEED_BASE:=${SEED:-1}}" "${CLEAR_CACHES:=true}" "${DATASET:=auto}"
  : "${RESULTS_DIR:=results}" "${RUNS_DIR:=runs}" "${SYNTH_HOURS:=12}" "${SYNTH_SEED:=1}"
  ds2_check_int NPROC 1; ds2_check_int NNODES 1; ds2_check_int NEXP 1; ds2_check_int SEED_BASE 0
  ds2_check_int SYNTH_SEED 0; ds2_check_positive SYNTH_HOURS
  ds2_check_bool CLEAR_CACHES
  ds2_check_enum DATASET auto synthetic librispeech
  [ -z "${RESULT_INDEX:-}" ] || ds2_check_int RESULT_INDEX 1
  if [ -n "${BATCH_SIZE:-}" ]; then ds2_global_batch; fi
  local var
  for var in $DS2_SHELL_VARS; do [ -z "${!var+set}" ] || export "${var?}"; done
}

# Sets PYTHON (and TORCHRUN beside it). A bare machine uses .venv, made or refreshed by scripts/setup.sh
# (idempotent, about a second when nothing changed); the Docker image sets PYTHON=python3.
ds2_choose_python() {   # $1: true to skip set-up (dry runs need only the standard library)
  if [ -z "${PYTHON:-}" ]; then
    if [ "${1:-false}" = true ]; then
      if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
    else
      scripts/setup.sh || ds2_fail "scripts/setup.sh failed (see above)"
      PYTHON=.venv/bin/python
    fi
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || ds2_fail "PYTHON='$PYTHON': not found"
  local bin; bin=$(dirname "$(command -v "$PYTHON")")
  if [ -z "${TORCHRUN:-}" ]; then
    if [ -x "$bin/torchrun" ]; then TORCHRUN=$bin/torchrun; else TORCHRUN=torchrun; fi
  fi
  export PYTHON
}

# --- the system: one per machine (benchmark.results.system_desc) ---
# Sets SYSTEM_NAME, the results folder and submission_platform of a run on this machine: derived from the
# machine (CPU_<processor>_<vcpus>c, <n>x<GPU>), never a folder whose system_desc.json describes another
# machine (a different one gets <name>_<hash>). SYSTEM still names the recipe (config_<SYSTEM>.sh). A
# SYSTEM_NAME given by the user must describe this machine, or the launch stops (exit 2).
ds2_system_name() {   # [write]: also write results/<system>/system_desc.json on the system's first run
  local accelerators=0 args
  [ "${NUM_GPUS:--1}" = 0 ] || accelerators=$NPROC
  args=(--accelerators "$accelerators" --nodes "$NNODES" --folder-for "$RESULTS_DIR")
  [ -z "${SYSTEM_NAME:-}" ] || args+=(--name "$SYSTEM_NAME")
  [ "${1:-}" != write ] || args+=(--write)
  SYSTEM_NAME=$("$PYTHON" -m benchmark.results.system_desc "${args[@]}") || exit 2
  export SYSTEM_NAME
}

# GPU configs need NPROC GPUs per node; NUM_GPUS=0 means a CPU run.
ds2_check_gpus() {
  [ "${NUM_GPUS:--1}" = 0 ] && return 0
  local count; count=$(ds2_gpu_count)
  (( count >= NPROC )) || ds2_fail "$CONFIG_FILE runs NPROC=$NPROC GPU processes per node but nvidia-smi sees" \
    "$count GPU(s): set NPROC=$count (the learning rate follows the global batch size), NUM_GPUS=0, or another SYSTEM"
}

ds2_manifests_present() {   # DIR SUBSETS(comma list): every DIR/<subset>.csv exists
  local subset
  for subset in ${2//,/ }; do [ -f "$1/$subset.csv" ] || return 1; done
}

# Sets DATASET (auto resolved), DATA_DIR, TRAIN_DATA_DIR, EVAL_DATA_DIR (comma-separated manifests),
# DATA_READY (true|false), PREP_CMD (array: the command that prepares the data, outside the timed run)
# and PREP_ALWAYS (true: run PREP_CMD even when the data is ready, as a cheap consistency check).
# TRAIN_DATA_DIR and EVAL_DATA_DIR given together mean manifests of one's own: used as they are.
ds2_resolve_data() {
  PREP_CMD=(); PREP_ALWAYS=false
  if [ -n "${TRAIN_DATA_DIR:-}" ] && [ -n "${EVAL_DATA_DIR:-}" ]; then
    DATA_READY=true; export TRAIN_DATA_DIR EVAL_DATA_DIR; return 0
  fi
  if [ "$DATASET" = auto ]; then
    if ds2_manifests_present "${DATA_DIR:-data/librispeech}" \
        "${TRAIN_SUBSETS:-$LIBRISPEECH_TRAIN_SUBSETS},${EVAL_SUBSETS:-$LIBRISPEECH_EVAL_SUBSETS}"; then
      DATASET=librispeech
    else
      DATASET=synthetic
    fi
  fi
  : "${DATA_DIR:=data/$DATASET}"
  if [ "$DATASET" = synthetic ]; then
    : "${TRAIN_SUBSETS:=train}" "${EVAL_SUBSETS:=dev}"
    PREP_CMD=("$PYTHON" -m benchmark.prepare.synthetic --data_dir "$DATA_DIR" --hours "$SYNTH_HOURS" --seed "$SYNTH_SEED")
  else
    : "${TRAIN_SUBSETS:=$LIBRISPEECH_TRAIN_SUBSETS}" "${EVAL_SUBSETS:=$LIBRISPEECH_EVAL_SUBSETS}"
    PREP_CMD=("$PYTHON" -m benchmark.prepare.librispeech --data_dir "$DATA_DIR" --subsets "$TRAIN_SUBSETS,$EVAL_SUBSETS")
  fi
  [[ $TRAIN_SUBSETS =~ ^[A-Za-z0-9_.,-]+$ ]] || ds2_fail "TRAIN_SUBSETS='$TRAIN_SUBSETS': comma-separated subset names"
  [[ $EVAL_SUBSETS =~ ^[A-Za-z0-9_.,-]+$ ]] || ds2_fail "EVAL_SUBSETS='$EVAL_SUBSETS': comma-separated subset names"
  local s train="" eval=""
  for s in ${TRAIN_SUBSETS//,/ }; do train+=${train:+,}$DATA_DIR/$s.csv; done
  for s in ${EVAL_SUBSETS//,/ }; do eval+=${eval:+,}$DATA_DIR/$s.csv; done
  TRAIN_DATA_DIR=$train; EVAL_DATA_DIR=$eval
  DATA_READY=false
  ds2_manifests_present "$DATA_DIR" "$TRAIN_SUBSETS,$EVAL_SUBSETS" && DATA_READY=true
  # A synthetic corpus is complete once fingerprint.json exists; its generator is run even then, because
  # it refuses (in about a second) a folder made with other --hours/--seed instead of using it silently.
  if [ "$DATASET" = synthetic ]; then
    [ -f "$DATA_DIR/fingerprint.json" ] || DATA_READY=false
    PREP_ALWAYS=true
  fi
  export DATASET DATA_DIR TRAIN_SUBSETS EVAL_SUBSETS TRAIN_DATA_DIR EVAL_DATA_DIR
}

# Sets TRAIN_ARGS (array of --flag=value) from the exported variables; exits 2 naming a bad variable.
ds2_train_args() {
  local out
  out=$(SYSTEM=$SYSTEM_NAME "$PYTHON" scripts/train_flags.py) || exit 2   # --system: the machine's system
  mapfile -t TRAIN_ARGS <<< "$out"
}
ds2_train_var_names() { "$PYTHON" scripts/train_flags.py --names; }

# Sets SEED, RESULT_FILE, RESOLVED_FILE, OUTPUT_DIR, LOG_FILE, TRAIN_ARGS and LAUNCH_CMD of run INDEX (from
# 0; seed SEED_BASE+INDEX) whose result number is N. RDZV_ID (multi-node) defaults to ds2perf-<system>-<N>.
ds2_configure_run() {   # INDEX N [RDZV_ID]
  SEED=$((SEED_BASE + $1))
  RESULT_FILE=$RESULTS_DIR/$SYSTEM_NAME/result_$2.txt
  RESOLVED_FILE=$RESULTS_DIR/$SYSTEM_NAME/config_$2.sh
  OUTPUT_DIR=$RUNS_DIR/$SYSTEM_NAME/run_$2
  LOG_FILE=$RESULT_FILE
  export SEED OUTPUT_DIR LOG_FILE
  ds2_train_args
  ds2_torchrun_cmd "${3:-ds2perf-$SYSTEM_NAME-$2}"
}

# Prints n after creating DIR/result_<n>.txt with O_EXCL (noclobber): two runs starting at the same moment
# can never get the same n, and an existing result is never overwritten. With RESULT_INDEX (multi-node:
# every node passes the same n) the file is only created if absent.
ds2_reserve_result() {   # DIR [OFFSET]
  local dir=$1 n
  mkdir -p "$dir" || ds2_fail "cannot create $dir"
  if [ -n "${RESULT_INDEX:-}" ]; then
    n=$((10#$RESULT_INDEX + ${2:-0})); : >> "$dir/result_$n.txt" || ds2_fail "cannot write $dir/result_$n.txt"
    echo "$n"; return 0
  fi
  [ -w "$dir" ] || ds2_fail "cannot write in $dir"
  for ((n = 1; n < 100000; n++)); do
    # The exclusive create is the only test (no separate existence check to race with).
    if (set -o noclobber; : > "$dir/result_$n.txt") 2>/dev/null; then echo "$n"; return 0; fi
  done
  ds2_fail "no free result number in $dir"
}
# RESULT_INDEX=n names the result files of runs n..n+COUNT-1; one that already holds a run's log is refused
# (unless RESUME=true: the training then appends the resumed run to it, and config_<n>.sh is kept)
# here, before config_<n>.sh, the system description or the data are touched (the training would refuse the
# log anyway, but only after the launcher had overwritten config_<n>.sh and would print a RESULT line pairing
# the new seed with the old run's time). An empty one is fine: another node of a multi-node run (same
# RESULT_INDEX on every node) created it a moment ago, or an earlier launch that logged nothing left it.
ds2_check_result_index() {   # DIR COUNT
  [ -n "${RESULT_INDEX:-}" ] || return 0
  [ "${RESUME:-false}" != true ] || return 0   # RESUME=true RESULT_INDEX=n appends to that log: its purpose
  local n file
  for ((n = 10#$RESULT_INDEX; n < 10#$RESULT_INDEX + $2; n++)); do
    file=$1/result_$n.txt
    if [ -s "$file" ]; then
      ds2_fail "RESULT_INDEX=$RESULT_INDEX: $file already holds a run's log ($(wc -c < "$file") bytes); results" \
        "are never overwritten: choose a free RESULT_INDEX, or leave it unset to take the next free number"
    fi
  done
}

# The training's preflight (benchmark/preflight.py via --check_only): flags, device and backend, every manifest
# row by its WAV header, evaluation words, --max_duration; as one process that sees the run's world size, so the
# plan (global batch, steps) is the real one. Runs before a result number is reserved: a bad input leaves no
# result file. Extra words (e.g. an srun prefix) go before the command.
ds2_preflight() {   # [PREFIX...]
  WORLD_SIZE=$((NPROC * NNODES)) LOCAL_WORLD_SIZE=$NPROC RANK=0 LOCAL_RANK=0 \
    "$@" "$PYTHON" -m benchmark.train "${TRAIN_ARGS[@]}" --check_only=true ||
    ds2_fail "the preflight found a problem (above); nothing was reserved or written in $RESULTS_DIR"
}

ds2_next_free_result() {   # DIR: the n a reservation would get now (dry runs; claims nothing)
  local n=1
  while [ -e "$1/result_$n.txt" ]; do n=$((n + 1)); done
  echo "$n"
}

# The launch command of one run: torchrun, standalone on one node (a free port, so concurrent runs on one
# machine don't collide) or c10d rendezvous across NNODES (run_id shared by all nodes).
ds2_torchrun_cmd() {   # RDZV_ID
  LAUNCH_CMD=("$TORCHRUN")
  if (( NNODES > 1 )); then
    LAUNCH_CMD+=(--nnodes="$NNODES" --nproc_per_node="$NPROC" --rdzv_backend=c10d
                 --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="$1")
  else
    LAUNCH_CMD+=(--standalone --nnodes=1 --nproc_per_node="$NPROC")
  fi
  LAUNCH_CMD+=(-m benchmark.train "${TRAIN_ARGS[@]}")
}

# Shell-quotes its arguments, leaving plain words (paths, comma lists, --flag=value) unescaped.
ds2_quote() {
  local word out=""
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:,=+@%-]+$ ]]; then out+=" $word"; else out+=" $(printf '%q' "$word")"; fi
  done
  echo "${out# }"
}

ds2_print_resolved() {   # KEY=value lines of every variable that is set, shell-level then training
  local var
  for var in $DS2_SHELL_VARS TRAIN_DATA_DIR EVAL_DATA_DIR $(ds2_train_var_names); do
    [ -z "${!var+set}" ] || echo "$var=$(ds2_quote "${!var}")"
  done | awk '!seen[$0]++'
}

ds2_write_resolved() {   # FILE RESULT_FILE: resolved configuration beside the result, written atomically
  # and never over an existing one (a resumed run's, or one another node of this run wrote): `ln` of the
  # complete temporary file either creates FILE or fails, with no moment where FILE is partial or replaced.
  local file=$1 tmp="$1.tmp.$$"
  local SEED_BASE=$SEED NEXP=1   # this run's own values, so sourcing the file repeats exactly this run
  {
    echo "# Resolved configuration of $2 ($CONFIG_FILE), written by $DS2_PROG"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), git $(git rev-parse --short HEAD 2>/dev/null ||
                                                                 echo "${DS2PERF_GIT_COMMIT:-unknown}")"
    echo "# This run again: (set -a; source $file; set +a; ./run_and_time.sh)"
    ds2_print_resolved
    echo "# launch: $(ds2_quote "${LAUNCH_CMD[@]}")"
  } > "$tmp" || { rm -f "$tmp"; ds2_fail "cannot write $tmp"; }
  if ! ln "$tmp" "$file" 2>/dev/null; then
    [ -e "$file" ] || { rm -f "$tmp"; ds2_fail "cannot write $file"; }
    ds2_note "kept the existing $file (resolved configurations are never overwritten)"
  fi
  rm -f "$tmp"
}

# MLPerf runs start from cold page caches. Needs root on the host (a container's /proc/sys is read-only):
# best effort, says when it could not. The training logs `cache_clear` itself.
ds2_clear_caches() {
  [ "$CLEAR_CACHES" = true ] || return 0
  sync
  if { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    ds2_note "dropped the page caches"
  else
    ds2_note "could not drop the page caches here (needs root, not in a container); continuing"
  fi
}

# RESULT line as MLPerf reference run_and_time.sh scripts print it:
# RESULT,<benchmark>,<seed>,<seconds>,<user>,<start date>. Seconds are run_stop - run_start from the log,
# or the wall time of the launch when the log has no such pair (an interrupted run).
# torchrun turns any failed worker into exit status 1; the log's run_stop status says whether that was the
# training's "aborted" (its exit status 3: target not reached), which is a completed MLPerf run.
ds2_training_status() {   # LAUNCH_STATUS LOG
  if [ "$1" = 1 ] && [ "$("$PYTHON" scripts/mllog_seconds.py --status "$2" 2>/dev/null)" = aborted ]; then
    echo 3
  else
    echo "$1"
  fi
}

ds2_result_line() {   # LOG SEED WALL_SECONDS START_FMT
  local seconds
  seconds=$("$PYTHON" scripts/mllog_seconds.py "$1" 2>/dev/null) || seconds=$3
  echo "RESULT,DEEPSPEECH2,$2,$seconds,${USER:-$(id -un)},$4"
}
