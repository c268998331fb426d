"""The reference DeepSpeech2: plain, readable, single-process float32 PyTorch that defines the maths.

numpy features on the host (reference.features), a torch DataLoader (reference.data), nn.LSTM/nn.GRU on
packed sequences (reference.model), nn.CTCLoss, AdamW with warm-up + cosine (reference.optim), greedy
decoding and corpus WER (reference.decode), and the loop that ties them (reference.train). No DALI, no
mixed precision, no distributed training. The optimized implementation in benchmark/ must match it:
tests/test_reference.py checks the parity, measure/compare_reference.py measures the speed-up.

Only infrastructure comes from benchmark/: manifest reading, the CLI helpers and the MLPerf logger.
"""
