# shellcheck shell=bash
# config_DGX1.sh: NVIDIA DGX-1, 8 x V100 (16 or 32 GB), one node.
# The full DeepSpeech2 on LibriSpeech 960 h, target WER 0.23 on dev-clean (the original deep_speech
# benchmark's threshold; here the run stops as soon as WER <= target). fp16: V100 has no bf16.
# Sourced by run_and_time.sh; the system name DGX1 comes from this file's name; the environment overrides.

: "${NPROC:=8}" "${NUM_GPUS:=-1}"
: "${BATCH_SIZE:=32}" "${EVAL_BATCH_SIZE:=64}"          # global batch 256
: "${AMP:=fp16}"                                        # GradScaler; the CTC loss stays fp32
: "${DATA_BACKEND:=dali_gpu}"

source "$(dirname "${BASH_SOURCE[0]}")/librispeech_recipe.sh"
source "$(dirname "${BASH_SOURCE[0]}")/hyperparameters.sh"
