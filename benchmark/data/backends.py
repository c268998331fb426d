"""The data backends: a table of like-for-like loaders behind one batch contract.

Each entry names its loader class (imported only when that backend is chosen, so only
benchmark.data.dali_loader imports nvidia.dali and everything else runs with DALI absent), what it
needs (CUDA, DALI) and what it can do (speed perturbation). `--data_backend` offers `auto` and the
table's names; `auto` takes the first available entry of AUTO_PREFERENCE for the training device.

Every loader class is built as `Loader(utterances, spec, device, workers, seed, speed_perturbation,
**entry.options)` and gives `loader.batches(list_of_index_lists)`: Batch(features [B,F,T],
feature_lengths, targets, target_lengths) on `device`, in the given order (the sampler owns the order).
Only the standard library is imported here: the flag choices come from this table in dry runs too.
"""
from dataclasses import dataclass, field
import importlib
import importlib.util

AUTO = "auto"


class BackendError(RuntimeError):
    """A backend that cannot run here (missing DALI or GPU, an option it lacks); the message says why."""


def dali_available():
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:   # no `nvidia` namespace package at all
        return False


@dataclass(frozen=True)
class Backend:
    name: str
    loader: str                   # "module:Class"
    needs_cuda: bool = False
    needs_dali: bool = False
    speed_perturbation: bool = False
    options: dict = field(default_factory=dict)   # extra keyword arguments of the loader class

    def unavailable(self, device_type):
        """Why this backend cannot run for a `device_type` training device here, or None."""
        if self.needs_dali and not dali_available():
            return (f"--data_backend {self.name}: NVIDIA DALI is not installed "
                    "(pip install -r requirements-dali.txt, or use --data_backend torch)")
        if self.needs_cuda and device_type != "cuda":
            return f"--data_backend {self.name} needs a GPU; use dali_cpu or torch"
        return None

    def loader_class(self):
        module, _, name = self.loader.partition(":")
        return getattr(importlib.import_module(module), name)


BACKENDS = {b.name: b for b in (
    Backend("dali_gpu", "benchmark.data.dali_loader:DaliLoader", needs_cuda=True, needs_dali=True,
            speed_perturbation=True, options={"on_gpu": True}),
    Backend("dali_cpu", "benchmark.data.dali_loader:DaliLoader", needs_dali=True, speed_perturbation=True),
    Backend("torch", "benchmark.data.torch_loader:TorchLoader"),
)}
CHOICES = (AUTO, *BACKENDS)
# The fastest available first (measure/featurize_throughput.py): DALI on a GPU; on the CPU the torch
# DataLoader, because DALI 2.4's CPU FFT takes ~3x longer per frame for the 320-point STFT.
AUTO_PREFERENCE = {"cuda": ("dali_gpu", "torch"), "cpu": ("torch",)}


def resolve_backend(requested, device):
    """The Backend entry for --data_backend `requested` on `device` (a torch.device or its type, 'cpu' or
    'cuda'); BackendError if it cannot run there."""
    device_type = getattr(device, "type", device)
    if requested == AUTO:
        return next(BACKENDS[n] for n in AUTO_PREFERENCE[device_type] if not BACKENDS[n].unavailable(device_type))
    if requested not in BACKENDS:
        raise BackendError(f"--data_backend {requested!r}: unknown; choose one of {', '.join(CHOICES)}")
    backend = BACKENDS[requested]
    reason = backend.unavailable(device_type)
    if reason:
        raise BackendError(reason)
    return backend
