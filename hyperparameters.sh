# shellcheck shell=bash
# Hyperparameters shared by every system with the same global batch size (sourced by config_<SYSTEM>.sh
# after it sets BATCH_SIZE and NPROC; NNODES comes from the launcher). A value already set (by the config
# or the environment) wins; this file only fills in what is missing, so systems that train with the same
# global batch get the same recipe however many GPUs they split it over.
#
# GPU entries are untuned starting points (AdamW, one-cycle; square-root learning-rate scaling from 256):
# no GPU time-to-target run has been made yet. The CPU recipe lives in config_CPU.sh.
ds2_global_batch

case "$GLOBAL_BATCH_SIZE" in
  256)  : "${LEARNING_RATE:=8e-4}"   "${WARMUP_FRACTION:=0.05}" ;;   # DGX1: 8 x 32
  512)  : "${LEARNING_RATE:=1.1e-3}" "${WARMUP_FRACTION:=0.05}" ;;   # DGXA100, DGXH100: 8 x 64
  1024) : "${LEARNING_RATE:=1.6e-3}" "${WARMUP_FRACTION:=0.05}" ;;   # 2 nodes x 8 x 64
  *)
    if [ -z "${LEARNING_RATE:-}" ]; then
      LEARNING_RATE=$(awk -v g="$GLOBAL_BATCH_SIZE" 'BEGIN { printf "%.3g", 8e-4 * sqrt(g / 256) }')
      : "${WARMUP_FRACTION:=0.05}"
      echo "hyperparameters.sh: no entry for global batch $GLOBAL_BATCH_SIZE; LEARNING_RATE=$LEARNING_RATE" \
           "(square-root scaling from 8e-4 at 256)" >&2
    fi
    ;;
esac
: "${OPTIMIZER:=adamw}" "${LR_SCHEDULE:=onecycle}" "${WARMUP_FRACTION:=0.1}"
