# Resolved configuration of results/CPU_AMD_EPYC_family_26_model_2_2c/result_3.txt (./config_CPU.sh), written by run_and_time.sh
# 2026-12-02T09:28:21Z on vm, git 02960df
# This run again: (set -a; source results/CPU_AMD_EPYC_family_26_model_2_2c/config_3.sh; set +a; ./run_and_time.sh)
SYSTEM=CPU
SYSTEM_NAME=CPU_AMD_EPYC_family_26_model_2_2c
NPROC=2
NNODES=1
DATASET=synthetic
DATA_DIR=data/synthetic
TRAIN_SUBSETS=train
EVAL_SUBSETS=dev
SYNTH_HOURS=12
SYNTH_SEED=1
NEXP=1
SEED_BASE=3
RESULTS_DIR=results
RUNS_DIR=runs
CLEAR_CACHES=true
GLOBAL_BATCH_SIZE=16
TRAIN_DATA_DIR=data/synthetic/train.csv
EVAL_DATA_DIR=data/synthetic/dev.csv
FEATURES=logmel
N_MELS=40
DATA_BACKEND=auto
RNN_TYPE=lstm
RNN_HIDDEN_SIZE=128
RNN_LAYERS=3
CONV_CHANNELS=8
TIME_STRIDE=2
BATCH_SIZE=8
EVAL_BATCH_SIZE=64
LEARNING_RATE=3e-3
OPTIMIZER=adamw
LR_SCHEDULE=onecycle
WARMUP_FRACTION=0.05
AMP=off
TARGET_WER=0.30
MAX_EPOCHS=3
SEED=3
NUM_GPUS=0
OUTPUT_DIR=runs/CPU_AMD_EPYC_family_26_model_2_2c/run_3
LOG_FILE=results/CPU_AMD_EPYC_family_26_model_2_2c/result_3.txt
# launch: .venv/bin/torchrun --standalone --nnodes=1 --nproc_per_node=2 -m benchmark.train --train_data_dir=data/synthetic/train.csv --eval_data_dir=data/synthetic/dev.csv --features=logmel --n_mels=40 --data_backend=auto --rnn_type=lstm --rnn_hidden_size=128 --rnn_layers=3 --conv_channels=8 --time_stride=2 --batch_size=8 --eval_batch_size=64 --learning_rate=0.003 --optimizer=adamw --lr_schedule=onecycle --warmup_fraction=0.05 --amp=off --target_wer=0.3 --max_epochs=3 --seed=3 --num_gpus=0 --output_dir=runs/CPU_AMD_EPYC_family_26_model_2_2c/run_3 --log_file=results/CPU_AMD_EPYC_family_26_model_2_2c/result_3.txt --system=CPU_AMD_EPYC_family_26_model_2_2c
