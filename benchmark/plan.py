"""The run plan: every value a run derives from its configuration and distributed context, derived once.

    ctx = distributed.context_from_environment()
    plan = make_plan(config, ctx, num_train_utterances=len(train_utts))   # ConfigError naming the flag
    model = plan.build_model(); optimizer = plan.build_optimizer(model); ...

A plan holds the training device, the resolved data backend, threads and loader workers per process,
the feature spec, the autocast dtype, the global batch, steps and samples per epoch, the schedule's total
steps and the model's arguments, and builds the model, optimizer, scheduler, grad scaler, sampler and
loaders from them. The trainer, --eval_only, the MLPerf header and the measuring scripts (measure/) all
take a plan; nothing else re-derives a value it holds. Making one checks what can be checked without
training (backend and device available, options the backend lacks), so it runs before init_start.
Without training utterances (--eval_only) the epoch and schedule fields are None.
"""
import contextlib
from dataclasses import dataclass, fields
import os

import torch
from torch.nn.parallel import DistributedDataParallel

from benchmark import distributed, optim
from benchmark.config import ConfigError
from benchmark.data.backends import Backend, BackendError, resolve_backend
from benchmark.data.sampler import TrainBatchSampler, epoch_shape, eval_batches
from benchmark.distributed import DistContext
from benchmark.features import FeatureSpec
from benchmark.model import CUDA_ONLY_RNN_IMPLS, DeepSpeech2, ModelArgs

AUTOCAST_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# The flags that decide the model's shape: ModelArgs' fields of the same names, and the features it reads.
MODEL_ARG_FLAGS = tuple(f.name for f in fields(ModelArgs) if f.name not in ("num_features", "num_classes"))
MODEL_FLAGS = ("features", "n_mels") + MODEL_ARG_FLAGS


@dataclass(frozen=True)
class RunPlan:
    config: object                # benchmark.config.TrainConfig
    ctx: DistContext
    device: torch.device
    backend: Backend
    threads: int                  # torch intra-op threads of this process
    workers: int                  # loader worker processes/threads of this rank
    feature_spec: FeatureSpec
    autocast_dtype: object        # torch.dtype, or None for fp32
    global_batch: int             # utterances per optimizer step over all ranks
    steps_per_epoch: int = None
    train_samples: int = None     # utterances per epoch over all ranks
    total_steps: int = None       # optimizer steps the learning-rate schedule spans
    model_args: ModelArgs = None
    conv_layout: str = "contiguous"   # --conv_layout resolved for this device

    # ------------------------------------------------------------------------------------ builders
    def build_model(self):
        torch.manual_seed(self.config.seed)   # same initial weights on every rank (DDP also broadcasts them)
        return DeepSpeech2.from_args(self.model_args, self.config.rnn_impl, self.conv_layout).to(self.device)

    def wrap_for_training(self, model):
        """DistributedDataParallel over the process group when there is one, else the model itself."""
        if not distributed.is_initialized():
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def build_optimizer(self, model):
        return optim.build_optimizer(self.config, model)

    def build_scheduler(self, optimizer):
        return optim.build_scheduler(self.config, optimizer, self.total_steps)

    def build_scaler(self):
        # Loss scaling only for fp16: bf16 has fp32's exponent range.
        return torch.amp.GradScaler(self.device.type, enabled=self.config.amp == "fp16")

    def build_sampler(self, durations):
        return TrainBatchSampler(durations, self.global_batch, self.ctx.world_size, self.ctx.rank,
                                 self.config.seed, self.config.sortagrad)

    def eval_batches(self, durations):
        """This rank's evaluation batches (utterance indices)."""
        return eval_batches(durations, self.config.eval_batch_size, self.ctx.world_size, self.ctx.rank)

    def build_loader(self, utterances, train):
        """The backend's loader over `utterances`; speed perturbation applies to training loaders only."""
        speed = self.config.speed_range() if train else None
        return self.backend.loader_class()(utterances, self.feature_spec, self.device, workers=self.workers,
                                           seed=self.config.seed, speed_perturbation=speed, **self.backend.options)

    def autocast(self):
        """Mixed-precision context of --amp (a no-op for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def uses_cuda(config):
    return torch.cuda.is_available() and config.num_gpus != 0


def available_cores():
    """CPU cores this process may run on (its affinity: what SLURM, docker --cpuset or taskset grant it),
    not every core of the machine as os.cpu_count() says."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def make_plan(config, ctx=DistContext(), num_train_utterances=None):
    """The plan of `config` for the process `ctx` describes; raises ConfigError for what cannot run here."""
    if config.num_gpus > 0 and torch.cuda.device_count() < config.num_gpus:
        # Asked for GPUs this machine lacks: training on the CPU instead would be another system's result.
        raise ConfigError(f"--num_gpus {config.num_gpus}: torch sees {torch.cuda.device_count()} CUDA device(s) "
                          "here; use --num_gpus 0 for a CPU run (or -1: all visible GPUs, the CPU without one)")
    device = torch.device("cuda", ctx.local_rank) if uses_cuda(config) else torch.device("cpu")
    try:
        backend = resolve_backend(config.data_backend, device)
    except BackendError as error:
        raise ConfigError(str(error)) from None
    if config.speed_range() and not backend.speed_perturbation:
        raise ConfigError(f"--speed_perturbation needs a DALI backend (--data_backend dali_gpu|dali_cpu), "
                          f"not {backend.name}")
    if config.rnn_impl in CUDA_ONLY_RNN_IMPLS and device.type != "cuda":
        raise ConfigError(f"--rnn_impl {config.rnn_impl} needs a CUDA device (it runs the two directions on two "
                          "CUDA streams); use padded or packed on the CPU")
    cores = available_cores()
    # Each process gets its share of the node's cores: oversubscribed OpenMP pools thrash on shared VMs.
    # The loader (torch DataLoader worker processes, or DALI's CPU threads, which decode for dali_gpu and
    # also featurize for dali_cpu) gets that share minus the core the training loop itself keeps busy.
    threads = config.num_threads or max(1, cores // ctx.local_world_size)
    workers = config.num_workers if config.num_workers >= 0 else max(1, cores // ctx.local_world_size - 1)
    spec = FeatureSpec(config.features, config.n_mels)
    global_batch = config.batch_size * ctx.world_size
    steps = samples = total = None
    if num_train_utterances is not None:
        steps, samples = epoch_shape(num_train_utterances, global_batch, ctx.world_size)
        if steps == 0:
            raise ConfigError(f"{num_train_utterances} training utterances make no global batch of {global_batch} "
                              "(--batch_size x processes)")
        total = optim.schedule_steps(config, steps)
    model_args = ModelArgs(num_features=spec.num_features, **{name: getattr(config, name) for name in MODEL_ARG_FLAGS})
    conv_layout = config.conv_layout if config.conv_layout != "auto" else (
        "channels_last" if device.type == "cpu" else "contiguous")   # GPUs: NCHW until measured there
    return RunPlan(config, ctx, device, backend, threads, workers, spec, AUTOCAST_DTYPES[config.amp],
                   global_batch, steps, samples, total, model_args, conv_layout)
