# shellcheck shell=bash
# config_CPU.sh: the CPU default, a small DeepSpeech2 on the synthetic corpus, on a 2-core machine.
# Target: WER <= TARGET_WER on the synthetic dev subset within 15 minutes of run_start (see README).
# Sourced by run_and_time.sh (the system name CPU comes from this file's name). Every value can be
# overridden from the environment: `RNN_LAYERS=2 ./run_and_time.sh`. Training flags use their upper-case
# names (python scripts/train_flags.py --names; meanings in python -m benchmark.train --help).

: "${NUM_GPUS:=0}"              # CPU only, even where a GPU is visible
: "${DATA_BACKEND:=auto}"       # DALI's CPU pipeline where installed, else the torch loader

# ===== PLACEHOLDER recipe, being tuned (issue 3): the README's target and corpus are the fixed ones =====
: "${DATASET:=synthetic}" "${SYNTH_HOURS:=12}"
: "${NPROC:=1}"
: "${RNN_TYPE:=gru}" "${RNN_HIDDEN_SIZE:=256}" "${RNN_LAYERS:=3}"
: "${CONV_CHANNELS:=16}" "${TIME_STRIDE:=4}"
: "${FEATURES:=logmel}" "${N_MELS:=80}"
: "${BATCH_SIZE:=32}" "${LEARNING_RATE:=3e-3}" "${OPTIMIZER:=adamw}" "${LR_SCHEDULE:=onecycle}"
: "${AMP:=off}"
: "${TARGET_WER:=0.30}" "${MAX_EPOCHS:=3}"
# ===== end of the placeholder recipe =====

source "$(dirname "${BASH_SOURCE[0]}")/hyperparameters.sh"
