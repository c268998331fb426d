#!/usr/bin/env bash
# Usage: [SYSTEM=<name>] [NEXP=N] [DRY_RUN=1] [VAR=value ...] ./run_and_time.sh
#
# One MLPerf-style timed DeepSpeech2 training run (or NEXP of them in a row):
#   1. sources config_<SYSTEM>.sh. SYSTEM defaults to CPU when nvidia-smi sees no GPU, else to the DGX
#      config of the GPU model (H100/H200: DGXH100, A100: DGXA100, V100: DGX1). The system name is the
#      config file's name (config_DGX1.sh -> DGX1); SYSTEM may also be the path of a config of one's own.
#   2. validates every variable (booleans exactly true/false, enumerations, numbers), naming a bad one;
#   3. prepares the data if absent, outside the timed region: the synthetic corpus (DATASET=synthetic, or
#      DATASET=auto without LibriSpeech manifests) or LibriSpeech, into DATA_DIR (default data/<dataset>);
#   4. names the system after this machine (SYSTEM_NAME, e.g. CPU_AMD_EPYC_family_26_model_2_2c; the
#      published results/CPU is another machine's) and, on its first run, writes
#      results/<system>/system_desc.json, generated from the machine and checked by mlperf_logging
#      (python -m benchmark.results.system_desc);
#   5. runs the training's preflight (python -m benchmark.train ... --check_only=true: flags, device, backend,
#      every manifest row by its WAV header); a problem stops here with exit 2 and no result file;
#   6. for each of NEXP runs: reserves results/<system>/result_<n>.txt (never overwritten, safe when runs
#      start concurrently), writes the resolved configuration to results/<system>/config_<n>.sh, drops the
#      page caches (best effort), launches `torchrun ... -m benchmark.train` with seed SEED_BASE+index and
#      prints   RESULT,DEEPSPEECH2,<seed>,<seconds>,<user>,<start date>
#      where seconds = run_stop - run_start of the run's MLPerf log (wall time if the log has no run_stop);
#   7. with NEXP>1, prints the MLPerf score: python -m benchmark.results.report results/<system>.
# Exit status: the training's: 0 success, 3 aborted (target not reached; torchrun reports it as 1, the log's
# run_stop status tells), 1 error; NEXP>1: the first failed run's, else 0. 2: a configuration error.
#
# Variables (the environment overrides the config file):
#   SYSTEM             which config_<SYSTEM>.sh (see above)
#   SYSTEM_NAME        the results folder (default: derived from the machine); must describe this machine
#   DRY_RUN=1          print the resolved configuration and the exact launch command(s), then exit:
#                      no set-up, no data preparation, no training, nothing written
#   NEXP, SEED_BASE    number of runs (default 1) and the first run's seed (default $SEED, else 1)
#   NPROC, NNODES      processes per node, nodes. NNODES>1 also needs RDZV_ENDPOINT=host:port and
#                      RESULT_INDEX=<n>, identical on every node (run.sub does this on SLURM)
#   RESULT_INDEX=<n>   use result_<n>.txt (runs n, n+1, ... with NEXP>1); one that holds a log: exit 2
#                      before anything is written
#   DATASET            auto|synthetic|librispeech; with DATA_DIR, TRAIN_SUBSETS, EVAL_SUBSETS (comma lists
#                      of manifest names), SYNTH_HOURS, SYNTH_SEED
#   TRAIN_DATA_DIR, EVAL_DATA_DIR   manifests of one's own (comma-separated CSVs), used as they are
#   RESULTS_DIR        default results; RUNS_DIR default runs (each run's output folder)
#   CLEAR_CACHES       true|false (default true): drop the page caches before each run, where permitted
#   PYTHON             interpreter (default .venv/bin/python, made by scripts/setup.sh; python3 in the image)
#   and every training flag under its upper-case name: AMP=bf16, RNN_HIDDEN_SIZE=512, SORTAGRAD=false, ...
#   (list: python scripts/train_flags.py --names; meanings: python -m benchmark.train --help)
#
# Examples:
#   ./run_and_time.sh                              # the CPU default: synthetic corpus, one run
#   NEXP=5 ./run_and_time.sh                       # seeds 1..5 in a row, then the score
#   SYSTEM=DGXH100 DRY_RUN=1 ./run_and_time.sh     # what an 8xH100 run would launch
set -euo pipefail
cd "$(dirname "$0")"
source scripts/threads.sh
source scripts/run_lib.sh

case "${DRY_RUN:-0}" in
  1|true) DRY=true ;;
  0|false|"") DRY=false ;;
  *) ds2_fail "DRY_RUN='$DRY_RUN': must be 1 or 0 (or true/false)" ;;
esac

ds2_load_config
ds2_choose_python "$DRY"
ds2_system_name
ds2_resolve_data

if (( NNODES > 1 )); then
  [ -n "${RDZV_ENDPOINT:-}" ] || ds2_fail "NNODES=$NNODES needs RDZV_ENDPOINT=host:port (the same on every node)"
  [ -n "${RESULT_INDEX:-}" ] || ds2_fail "NNODES=$NNODES needs RESULT_INDEX=<n>, the same on every node, so that" \
    "whichever node gets rank 0 writes $RESULTS_DIR/$SYSTEM/result_<n>.txt (run.sub does this on SLURM)"
fi

first=${RESULT_INDEX:-$(ds2_next_free_result "$RESULTS_DIR/$SYSTEM_NAME")}
ds2_configure_run 0 "$first"   # validates every training variable before anything is prepared or written
ds2_check_result_index "$RESULTS_DIR/$SYSTEM_NAME" "$NEXP"   # a reused RESULT_INDEX: exit 2, nothing written

if [ "$DRY" = true ]; then
  echo "# Resolved configuration: $CONFIG_FILE (python: $PYTHON), system $SYSTEM_NAME"
  ds2_print_resolved
  if [ "$DATA_READY" = false ]; then
    echo "# data absent: it would be prepared (not timed) with:"
    ds2_quote "${PREP_CMD[@]}"
  fi
  (( $(ds2_gpu_count) >= NPROC )) || [ "${NUM_GPUS:--1}" = 0 ] ||
    echo "# note: NPROC=$NPROC GPU processes but nvidia-smi sees $(ds2_gpu_count) GPU(s) here: a real run would stop"
  for ((i = 0; i < NEXP; i++)); do
    ds2_configure_run "$i" $((first + i))
    echo "# run $((i + 1))/$NEXP: seed $SEED, log $RESULT_FILE"
    ds2_quote "${LAUNCH_CMD[@]}"
  done
  exit 0
fi

ds2_check_gpus
ds2_system_name write   # this machine's system_desc.json on its first run, checked by mlperf_logging
if [ "$DATA_READY" = false ] || { [ "$PREP_ALWAYS" = true ] && (( NNODES == 1 )); }; then
  (( NNODES == 1 )) || ds2_fail "no data in $DATA_DIR: prepare it once before a multi-node run: $(ds2_quote "${PREP_CMD[@]}")"
  ds2_note "preparing or checking the data in $DATA_DIR (outside the timed run): $(ds2_quote "${PREP_CMD[@]}")"
  "${PREP_CMD[@]}" || ds2_fail "data preparation failed (status $?)"
  ds2_manifests_present "$DATA_DIR" "$TRAIN_SUBSETS,$EVAL_SUBSETS" ||
    ds2_fail "data preparation left no manifests $TRAIN_DATA_DIR,$EVAL_DATA_DIR"
fi

ds2_preflight   # every input checked before a result number is spent (exit 2, nothing reserved)

status=0
for ((i = 0; i < NEXP; i++)); do
  n=$(ds2_reserve_result "$RESULTS_DIR/$SYSTEM_NAME" "$i") || exit 2
  ds2_configure_run "$i" "$n"
  ds2_write_resolved "$RESOLVED_FILE" "$RESULT_FILE"
  ds2_clear_caches
  ds2_note "run $((i + 1))/$NEXP of $SYSTEM on $SYSTEM_NAME, seed $SEED, log $RESULT_FILE"
  ds2_quote "${LAUNCH_CMD[@]}"
  start_fmt=$(date +"%Y-%m-%d %r")
  started=$(date +%s.%N)
  run_status=0
  "${LAUNCH_CMD[@]}" || run_status=$?
  run_status=$(ds2_training_status "$run_status" "$RESULT_FILE")
  wall=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
  ds2_result_line "$RESULT_FILE" "$SEED" "$wall" "$start_fmt"
  if (( run_status != 0 )); then
    ds2_note "run $((i + 1)) exited with status $run_status"
    (( status != 0 )) || status=$run_status
    if [ ! -s "$RESULT_FILE" ] && [ -z "${RESULT_INDEX:-}" ]; then
      rm -f "$RESULT_FILE" "$RESOLVED_FILE"   # nothing was logged: give the number back
      ds2_note "it logged nothing; removed the empty $RESULT_FILE"
    fi
    (( run_status < 128 )) || break   # killed by a signal (Ctrl-C): stop the series
  fi
done

if (( NEXP > 1 )); then
  echo "# Score of $RESULTS_DIR/$SYSTEM_NAME:"
  "$PYTHON" -m benchmark.results.report "$RESULTS_DIR/$SYSTEM_NAME" || ds2_note "benchmark.results.report failed (status $?)"
fi
exit "$status"
