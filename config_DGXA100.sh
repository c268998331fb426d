# shellcheck shell=bash
# config_DGXA100.sh: NVIDIA DGX A100, 8 x A100 (40 or 80 GB), one node.
# The full DeepSpeech2 on LibriSpeech 960 h, target WER 0.23 on dev-clean (the original deep_speech
# benchmark's threshold; here the run stops as soon as WER <= target). bf16 autocast (no loss scaling needed).
# Sourced by run_and_time.sh; the system name DGXA100 comes from this file's name; the environment overrides.

: "${NPROC:=8}" "${NUM_GPUS:=-1}"
: "${BATCH_SIZE:=64}" "${EVAL_BATCH_SIZE:=128}"         # global batch 512
: "${AMP:=bf16}"                                        # the CTC loss stays fp32
: "${DATA_BACKEND:=dali_gpu}"

source "$(dirname "${BASH_SOURCE[0]}")/librispeech_recipe.sh"
source "$(dirname "${BASH_SOURCE[0]}")/hyperparameters.sh"
