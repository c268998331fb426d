"""ds2perf: an MLPerf-style DeepSpeech2 training benchmark (the optimized implementation)."""
