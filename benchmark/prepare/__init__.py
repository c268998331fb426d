"""Data preparation, outside the timed run: LibriSpeech download and conversion, the synthetic corpus."""
