"""NVIDIA DALI backend: decode on the CPU, spectrogram -> (mel) -> log1p -> normalize -> pad on GPU or CPU.

The only module that imports `nvidia.dali` (benchmark.data.backends imports it only when a DALI backend
is chosen). Same contract as the torch loader: `DaliLoader(...).batches(list_of_index_lists)` yields
`Batch(features [B,F,T], feature_lengths, targets, target_lengths)` on the training device, in the given
order (the sampler owns the order; DALI never shuffles). The maths is benchmark.features':

    encoded bytes --external_source--> decoders.audio (mono, native rate, checked to be 16 kHz)
      [--> audio_resample(scale=1/speed)  optional speed perturbation, factors drawn from the seed]
      --> spectrogram (symmetric Hamming 320, hop 160, nfft 320, no centering, magnitude)
      [--> mel_filter_bank (Slaney, area-normalized)]  --> log(x + 1)
      --> normalize over time per bin: (x - mean) / sqrt(var + 1e-5), population variance
      --> pad to the batch's longest (zeros)

A small thread pool reads the files' bytes READ_AHEAD batches ahead (numpy releases the GIL while it
reads), so the external source DALI calls from the training loop's thread only hands over bytes that are
already in memory: a cold page cache (run_and_time.sh drops it before each run) does not stall the loop.
DALI's worker threads decode and featurize while the training step runs, `prefetch_queue_depth` batches
ahead. With a CUDA training device, what crosses from the host (the CPU pipeline's features, lengths and
targets) is copied from pinned memory without blocking the host.
"""
from collections import deque
from concurrent.futures import ThreadPoolExecutor
import itertools

import numpy as np
import soundfile
import torch
import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from benchmark import features as feats
from benchmark.data.batch import Batch, pad_targets
from benchmark.text import encode

PREFETCH_DEPTH = 2   # batches DALI prepares ahead of the one the training step is using
READ_AHEAD = PREFETCH_DEPTH + 2   # batches whose files are read ahead of what DALI asks for
READ_THREADS = 2


def _read_files(paths):
    return [np.fromfile(path, dtype=np.uint8) for path in paths]


def _check_speed_range(speed_perturbation):
    if speed_perturbation is None:
        return None
    low, high = (float(v) for v in speed_perturbation)
    if not 0 < low <= high:
        raise ValueError(f"speed perturbation range must satisfy 0 < low <= high, got ({low}, {high})")
    return low, high


def build_pipeline(spec, max_batch_size, num_threads, on_gpu, device_id, seed, source, speed_perturbation):
    """The DALI graph. Outputs: padded features, feature shapes [F, T], native sample rates, audio lengths."""
    pipe = Pipeline(batch_size=max_batch_size, num_threads=num_threads,
                    device_id=device_id if on_gpu else None,   # None: CPU-only pipeline (DALI 2.4)
                    seed=seed, prefetch_queue_depth=PREFETCH_DEPTH, exec_async=True, exec_pipelined=True)
    with pipe:
        if speed_perturbation:
            encoded, scale = fn.external_source(source=source, num_outputs=2, dtype=[types.UINT8, types.FLOAT],
                                                ndim=[1, 0])
        else:
            encoded = fn.external_source(source=source, dtype=types.UINT8, ndim=1)
        # No sample_rate: decode at the native rate so a non-16 kHz file is reported, as the torch loader does.
        audio, rate = fn.decoders.audio(encoded, downmix=True, dtype=types.FLOAT)
        if speed_perturbation:
            # Playing `speed` times faster = resampling to 1/speed as many samples, read back at 16 kHz.
            audio = fn.audio_resample(audio, scale=scale)
        audio_length = audio.shape()
        if on_gpu:
            audio = audio.gpu()
        spectrogram = fn.spectrogram(audio, nfft=feats.N_FFT, window_length=feats.WINDOW_SIZE,
                                     window_step=feats.HOP_SIZE, window_fn=feats.hamming_window().tolist(),
                                     center_windows=False, power=1, layout="ft")
        if spec.kind == "logmel":
            spectrogram = fn.mel_filter_bank(spectrogram, nfilter=spec.n_mels, sample_rate=feats.SAMPLE_RATE,
                                             freq_low=0.0, freq_high=feats.SAMPLE_RATE / 2, normalize=True,
                                             mel_formula="slaney")
        # dali.math has no log1p; log(1 + x) differs by ~1e-6 before normalization (tested against torch).
        logged = dmath.log(spectrogram + 1.0)
        # DALI divides by sqrt(var + epsilon) with var = sum((x - mean)^2) / (N - ddof): features.py's formula.
        normalized = fn.normalize(logged, axes=[1], epsilon=feats.NORM_EPSILON, ddof=0)
        padded = fn.pad(normalized, axes=[1], fill_value=0.0)
        pipe.set_outputs(padded, normalized.shape(), rate, audio_length)
    pipe.build()
    return pipe


class _EpochSource:
    """External-source callable: one batch of encoded files (and speed scales) per call, StopIteration at the end."""

    def __init__(self):
        self.items = iter(())

    def __call__(self):
        return next(self.items)


class DaliLoader:
    """`loader.batches(list_of_index_lists)` iterates Batches on `device` in the given order.

    `speed_perturbation=(low, high)` plays each utterance at a speed drawn uniformly from that range
    (1.1 = 10% faster, fewer frames), from a generator seeded by (seed, number of earlier `batches` calls).
    """

    def __init__(self, utterances, spec, device, workers=1, seed=1, speed_perturbation=None, on_gpu=False):
        self.utterances, self.spec = list(utterances), spec
        self.device, self.on_gpu, self.seed = torch.device(device), on_gpu, seed
        self.num_threads = max(1, int(workers))   # DALI's CPU threads (decode, and featurize on the CPU)
        self.speed_perturbation = _check_speed_range(speed_perturbation)
        if on_gpu and self.device.type != "cuda":
            raise ValueError(f"DALI on the GPU needs a CUDA training device, got {self.device}")
        self.targets = []
        for u in self.utterances:
            try:
                self.targets.append(encode(u.transcript))
            except ValueError as error:
                raise ValueError(f"{u.path}: {error}") from None
        self._source = _EpochSource()
        self._pipe, self._max_batch_size, self._calls = None, 0, 0
        self._readers = None   # ThreadPoolExecutor, made on first use
        self._pin = self.device.type == "cuda"

    def _pipeline(self, max_batch_size):
        if self._pipe is None or max_batch_size > self._max_batch_size:
            device_id = None
            if self.on_gpu:
                device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._pipe = None   # free the old one first
            self._pipe = build_pipeline(self.spec, max_batch_size, self.num_threads, self.on_gpu, device_id,
                                        self.seed, self._source, self.speed_perturbation)
            self._max_batch_size = max_batch_size
        return self._pipe

    def _feed(self, index_batches, rng):
        """Each batch's encoded files (read READ_AHEAD batches ahead by the pool) and speed scales, in order."""
        if self._readers is None:
            self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="dali-read")

        def read(indices):
            return indices, self._readers.submit(_read_files, [self.utterances[i].path for i in indices])

        batches = iter(index_batches)
        pending = deque(read(b) for b in itertools.islice(batches, READ_AHEAD))
        while pending:
            indices, reading = pending.popleft()
            following = next(batches, None)
            if following is not None:
                pending.append(read(following))
            encoded = reading.result()
            if self.speed_perturbation is None:
                yield encoded
            else:   # drawn here, in batch order: the speeds depend on the seed only
                speeds = rng.uniform(*self.speed_perturbation, size=len(indices))
                yield encoded, [np.float32(1.0 / s) for s in speeds]

    def batches(self, index_batches):
        index_batches = [list(b) for b in index_batches]
        if not index_batches:
            return
        if any(not b for b in index_batches):
            raise ValueError("empty batch in the sampler's list")
        pipe = self._pipeline(max(len(b) for b in index_batches))
        rng = np.random.default_rng([self.seed, self._calls])
        self._calls += 1
        self._source.items = self._feed(index_batches, rng)
        finished = False
        try:
            for indices in index_batches:
                yield self._to_batch(self._run(pipe, indices), indices)
            finished = True
        finally:
            self._end_epoch(pipe, drain=not finished)

    def _run(self, pipe, indices):
        try:
            return pipe.run()
        except StopIteration:
            raise RuntimeError("DALI pipeline ended before the sampler's batches did") from None
        except Exception as error:
            self._pipe = None   # a failed DALI pipeline cannot be reused
            raise RuntimeError(f"DALI failed on a batch of {len(indices)} files "
                               f"({self._diagnose(indices)}): {error}") from error

    def _diagnose(self, indices):
        """Name the first file of a failed batch that soundfile cannot read or that is too short."""
        for i in indices:
            path = self.utterances[i].path
            try:
                info = soundfile.info(str(path))
            except Exception as error:   # noqa: BLE001 - any reader error marks the culprit
                return f"unreadable: {path}: {error}"
            if feats.num_frames(info.frames) == 0:
                return (f"{path}: audio of {info.frames} samples is shorter than one "
                        f"{feats.WINDOW_SIZE}-sample window")
        return f"first file {self.utterances[indices[0]].path}"

    def _end_epoch(self, pipe, drain):
        if self._pipe is not pipe:
            return
        if drain:   # the consumer stopped early: drop what DALI prefetched so the next epoch starts clean
            self._source.items = iter(())
            try:
                for _ in itertools.count():
                    pipe.run()
            except StopIteration:
                pass
            except Exception:   # noqa: BLE001 - a broken pipeline is rebuilt on the next call
                self._pipe = None
                return
        else:   # one more run() to hit the source's StopIteration, which ends DALI's epoch
            try:
                pipe.run()
                self._pipe = None   # should not happen: the pipeline had more batches than fed
            except StopIteration:
                pass
        if self._pipe is not None:
            pipe.reset()

    def _to_batch(self, outputs, indices):
        features, shapes, rates, audio_lengths = outputs
        for k, i in enumerate(indices):
            rate = float(np.array(rates[k]))
            if rate != feats.SAMPLE_RATE:
                raise ValueError(f"{self.utterances[i].path}: expected 16 kHz mono audio, got {rate:g} Hz")
            samples = int(np.array(audio_lengths[k])[0])
            if feats.num_frames(samples) == 0:
                raise ValueError(f"{self.utterances[i].path}: audio of {samples} samples is shorter than one "
                                 f"{feats.WINDOW_SIZE}-sample window")
        lengths = torch.tensor([int(np.array(shapes[k])[1]) for k in range(len(indices))], dtype=torch.int64)
        dense = features.as_tensor()
        out_device = self.device if self.on_gpu else torch.device("cpu")
        padded = torch.empty(tuple(dense.shape()), dtype=torch.float32, device=out_device,
                             pin_memory=self._pin and not self.on_gpu)
        stream = torch.cuda.current_stream(out_device) if out_device.type == "cuda" else None
        feed_ndarray(dense, padded, cuda_stream=stream)   # device-to-device on the GPU, no host copy
        targets, target_lengths = pad_targets([self.targets[i] for i in indices])
        batch = Batch(padded, lengths, targets, target_lengths)
        return (batch.pin_memory() if self._pin else batch).to(self.device, non_blocking=True)
