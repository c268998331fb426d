# Resolved configuration of /work/main/results/CPU/result_2.txt (./config_CPU.sh), written by run_and_time.sh
# 2026-11-26T01:37:13Z on vm, git edbd351
# This run again: (set -a; source /work/main/results/CPU/config_2.sh; set +a; ./run_and_time.sh)
SYSTEM=CPU
NPROC=2
NNODES=1
DATASET=synthetic
DATA_DIR=/work/main/data/synthetic
TRAIN_SUBSETS=train
EVAL_SUBSETS=dev
SYNTH_HOURS=12
SYNTH_SEED=1
NEXP=1
SEED_BASE=2
RESULTS_DIR=/work/main/results
RUNS_DIR=/work/main/runs
CLEAR_CACHES=true
GLOBAL_BATCH_SIZE=32
TRAIN_DATA_DIR=/work/main/data/synthetic/train.csv
EVAL_DATA_DIR=/work/main/data/synthetic/dev.csv
FEATURES=logmel
N_MELS=40
DATA_BACKEND=auto
RNN_TYPE=gru
RNN_HIDDEN_SIZE=192
RNN_LAYERS=3
CONV_CHANNELS=8
TIME_STRIDE=4
BATCH_SIZE=16
EVAL_BATCH_SIZE=64
LEARNING_RATE=3e-3
OPTIMIZER=adamw
LR_SCHEDULE=onecycle
WARMUP_FRACTION=0.05
AMP=off
TARGET_WER=0.30
MAX_EPOCHS=3
SEED=2
NUM_GPUS=0
OUTPUT_DIR=/work/main/runs/CPU/run_2
LOG_FILE=/work/main/results/CPU/result_2.txt
# launch: /work/main/.venv/bin/torchrun --standalone --nnodes=1 --nproc_per_node=2 -m benchmark.train --train_data_dir=/work/main/data/synthetic/train.csv --eval_data_dir=/work/main/data/synthetic/dev.csv --features=logmel --n_mels=40 --data_backend=auto --rnn_type=gru --rnn_hidden_size=192 --rnn_layers=3 --conv_channels=8 --time_stride=4 --batch_size=16 --eval_batch_size=64 --learning_rate=0.003 --optimizer=adamw --lr_schedule=onecycle --warmup_fraction=0.05 --amp=off --target_wer=0.3 --max_epochs=3 --seed=2 --num_gpus=0 --output_dir=/work/main/runs/CPU/run_2 --log_file=/work/main/results/CPU/result_2.txt --system=CPU
