# shellcheck shell=bash
# The full DeepSpeech2 on LibriSpeech 960 h, shared by the GPU system configs (config_DGX*.sh source it
# after setting their own NPROC, batch size, precision and data backend). Target WER 0.23 on dev-clean,
# the original deep_speech benchmark's threshold; the run stops as soon as WER <= target. A value already
# set (by the config or the environment) wins.

: "${DATASET:=librispeech}"
: "${TRAIN_SUBSETS:=train-clean-100,train-clean-360,train-other-500}" "${EVAL_SUBSETS:=dev-clean}"
: "${MAX_DURATION:=16.7}"                               # drops the few longest utterances (memory)

# Model: DeepSpeech2 as in the paper and the references (2 conv + 5 x BiLSTM-800, 161-bin spectrogram).
: "${RNN_TYPE:=lstm}" "${RNN_HIDDEN_SIZE:=800}" "${RNN_LAYERS:=5}"
: "${CONV_CHANNELS:=32}" "${TIME_STRIDE:=2}" "${FEATURES:=spectrogram}"

: "${TARGET_WER:=0.23}" "${MAX_EPOCHS:=30}"
