#!/usr/bin/env bash
# Usage: [SYSTEM=<name>] [NEXP=N] [SEED_BASE=S] [IMAGE=ds2perf:latest] [BUILD=auto|true|false]
#        [DRY_RUN=1] [VAR=value ...] ./run_with_docker.sh
#
# Runs ./run_and_time.sh in the Docker image (see Dockerfile) NEXP times, seeds SEED_BASE+index, one fresh
# container per run with the page caches dropped on the host before it (where permitted: root), then
# prints the MLPerf score of results/<system>.
#   - image: IMAGE (default ds2perf:latest), built from ./Dockerfile when missing (BUILD=auto), always
#     (BUILD=true) or never (BUILD=false);
#   - mounts: DATA_HOST (default ./data), RESULTS_HOST (./results) and RUNS_HOST (./runs) on data/, results/
#     and runs/ of the project in the container, so prepared data and results stay on the host;
#   - forwards every configuration variable set here (SYSTEM, NPROC, AMP, BATCH_SIZE, ... any variable
#     run_and_time.sh reads) with `docker run -e`; SYSTEM defaults as in run_and_time.sh (nvidia-smi here);
#   - GPUS: --gpus value (default all; GPUS=none for a CPU-only container); DOCKER_ARGS: extra docker run
#     arguments;
#   - DRY_RUN=1 prints the docker commands (and checks the configuration) without running anything.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/run_lib.sh

case "${DRY_RUN:-0}" in
  1|true) DRY=true ;;
  0|false|"") DRY=false ;;
  *) ds2_fail "DRY_RUN='$DRY_RUN': must be 1 or 0 (or true/false)" ;;
esac
: "${IMAGE:=ds2perf:latest}" "${BUILD:=auto}" "${GPUS:=all}" "${NEXP:=1}" "${SEED_BASE:=${SEED:-1}}"
: "${CLEAR_CACHES:=true}" "${DATA_HOST:=$PWD/data}" "${RESULTS_HOST:=$PWD/results}" "${RUNS_HOST:=$PWD/runs}"
ds2_check_enum BUILD auto true false; ds2_check_int NEXP 1; ds2_check_int SEED_BASE 0
ds2_check_bool CLEAR_CACHES
: "${SYSTEM:=$(ds2_default_system)}"
[[ $SYSTEM =~ ^[A-Za-z0-9_-]+$ ]] || ds2_fail "SYSTEM='$SYSTEM': a config name (the image holds config_<SYSTEM>.sh)"
[ -f "config_$SYSTEM.sh" ] || ds2_fail "SYSTEM='$SYSTEM': no config_$SYSTEM.sh"
export SYSTEM
PYTHON=${PYTHON_HOST:-python3}   # only for the variable names (standard library)

# Variables to forward (values as the container sees them: the project is at /workspace/ds2perf, DATA_HOST
# is its data/): the launcher's and every training flag's, when set here. Per-run ones are set below.
forward_args=()
# shellcheck disable=SC2086,SC2046  # word lists on purpose
for var in $(printf '%s\n' $DS2_SHELL_VARS TRAIN_DATA_DIR EVAL_DATA_DIR $(ds2_train_var_names) | awk '!seen[$0]++'); do
  case "$var" in
    RESULTS_DIR|RUNS_DIR|NEXP|SEED_BASE|SEED|CLEAR_CACHES|OUTPUT_DIR|LOG_FILE|GLOBAL_BATCH_SIZE) continue ;;
  esac
  [ -z "${!var+set}" ] || forward_args+=(-e "$var")
done

workdir=/workspace/ds2perf
run_args=(--rm --ipc=host --ulimit memlock=-1 --ulimit stack=67108864
          -v "$DATA_HOST:$workdir/data" -v "$RESULTS_HOST:$workdir/results" -v "$RUNS_HOST:$workdir/runs")
[ "$GPUS" = none ] || run_args+=(--gpus "$GPUS")
# shellcheck disable=SC2206  # DOCKER_ARGS is a list of words on purpose
[ -z "${DOCKER_ARGS:-}" ] || run_args+=($DOCKER_ARGS)
build_cmd=(docker build -t "$IMAGE" --build-arg "GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" .)

# Check the configuration here first, with the scripts the container runs, before building anything.
DRY_RUN=1 NEXP="$NEXP" SEED_BASE="$SEED_BASE" ./run_and_time.sh > /dev/null

if [ "$DRY" = true ]; then
  [ "$BUILD" = false ] || echo "# build ($([ "$BUILD" = true ] && echo always || echo "if $IMAGE is missing")):"
  [ "$BUILD" = false ] || ds2_quote "${build_cmd[@]}"
  for ((i = 0; i < NEXP; i++)); do
    echo "# run $((i + 1))/$NEXP (page caches dropped on the host first: $CLEAR_CACHES):"
    ds2_quote docker run "${run_args[@]}" "${forward_args[@]}" -e NEXP=1 -e SEED_BASE=$((SEED_BASE + i)) \
      -e CLEAR_CACHES=false "$IMAGE" ./run_and_time.sh
  done
  echo "# score:"
  ds2_quote docker run --rm -v "$RESULTS_HOST:$workdir/results" "$IMAGE" python3 -m benchmark.results.report results
  exit 0
fi

command -v docker >/dev/null || ds2_fail "docker not found"
if [ "$BUILD" = true ] || { [ "$BUILD" = auto ] && ! docker image inspect "$IMAGE" >/dev/null 2>&1; }; then
  "${build_cmd[@]}"
fi
mkdir -p "$DATA_HOST" "$RESULTS_HOST" "$RUNS_HOST"
status=0
for ((i = 0; i < NEXP; i++)); do
  ds2_clear_caches   # on the host: a container cannot
  run_status=0
  docker run "${run_args[@]}" "${forward_args[@]}" -e NEXP=1 -e SEED_BASE=$((SEED_BASE + i)) \
    -e CLEAR_CACHES=false "$IMAGE" ./run_and_time.sh || run_status=$?
  if (( run_status != 0 )); then
    ds2_note "run $((i + 1)) exited with status $run_status"
    (( status != 0 )) || status=$run_status
    (( run_status != 2 && run_status < 128 )) || break   # configuration error or interrupted: stop
  fi
done
if (( NEXP > 1 )); then
  docker run --rm -v "$RESULTS_HOST:$workdir/results" "$IMAGE" python3 -m benchmark.results.report results ||
    ds2_note "benchmark.results.report failed"
fi
exit "$status"
