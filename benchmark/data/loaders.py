"""Pick the audio pipeline: DALI on GPU or CPU when installed, else the PyTorch DataLoader.

Only benchmark.data.dali_loader imports nvidia.dali, and only when a DALI backend is chosen, so
everything else runs with DALI absent.
"""
import importlib.util
import os

from benchmark.data.torch_loader import TorchLoader


def dali_available():
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:   # no `nvidia` namespace package at all
        return False


def resolve_backend(requested, device):
    if requested == "auto":
        # The fastest available (measure/featurize_throughput.py): DALI on a GPU; on the CPU the torch
        # DataLoader, because DALI 2.4's CPU FFT takes ~3x longer per frame for the 320-point STFT.
        return "dali_gpu" if device.type == "cuda" and dali_available() else "torch"
    if requested.startswith("dali") and not dali_available():
        raise RuntimeError(f"--data_backend {requested}: NVIDIA DALI is not installed "
                           "(pip install -r requirements-dali.txt, or use --data_backend torch)")
    if requested == "dali_gpu" and device.type != "cuda":
        raise RuntimeError("--data_backend dali_gpu needs a GPU; use dali_cpu or torch")
    return requested


def default_workers(config):
    if config.num_workers >= 0:
        return config.num_workers
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1)


def make_loader(config, utterances, spec, device, train):
    backend = resolve_backend(config.data_backend, device)
    workers = default_workers(config)
    speed_range = config.speed_range() if train else None
    if backend == "torch":
        if speed_range:
            raise RuntimeError(f"--speed_perturbation needs a DALI backend (--data_backend dali_gpu|dali_cpu), "
                               f"not {backend}")
        loader = TorchLoader(utterances, spec, device, num_workers=workers)
    else:
        from benchmark.data.dali_loader import DaliLoader
        loader = DaliLoader(utterances, spec, device, num_threads=workers, on_gpu=backend == "dali_gpu",
                            seed=config.seed, speed_perturbation=speed_range)
    loader.name = backend
    return loader
