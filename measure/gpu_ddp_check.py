"""GPU check of the training maths under DistributedDataParallel with NCCL, and full-model step throughput.

Usage (on a machine with a CUDA GPU; one process is enough, it joins a 1-rank NCCL group itself):
  python measure/gpu_ddp_check.py [--batch_size 64] [--frames 1000] [--steps 20]

For fp32, bf16 and fp16 autocast it makes the run plan of the full DeepSpeech2 (5 x BiLSTM-800, cuDNN),
whose trainer wraps the model in DDP over the NCCL group, trains --steps steps of Trainer.train_step (the
benchmark's own step: CTC loss, optimizer, GradScaler, clipping, finiteness check) on a fixed random
batch, all-reduces word-error counts through benchmark.metrics (the NCCL path of the global WER), and
prints the loss trend, utterances/s and the model's TFLOP/s (benchmark/flops.py) against the matmul peak
measured at the same precision. Losses are read after the timed steps, so the host runs ahead of the GPU
as in training. Exit status 1 when the loss does not fall or is not finite.
(measure/gpu_step_benchmark.py compares the recurrent implementations, precisions and batch sizes.)
"""
import argparse
import os
from pathlib import Path
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from benchmark.config import TrainConfig  # noqa: E402
from benchmark.data.batch import Batch  # noqa: E402
from benchmark.flops import StepCosts, measure_matmul_peak  # noqa: E402
from benchmark.metrics import WordErrorCounter  # noqa: E402
from benchmark.plan import make_plan  # noqa: E402
from benchmark.trainer import Trainer  # noqa: E402


def fixed_batch(batch_size, frames, device):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(frames // 2, frames + 1, (batch_size,), generator=g)
    lengths[0] = frames
    features = torch.randn(batch_size, 161, frames, generator=g)
    features *= (torch.arange(frames) < lengths[:, None]).float()[:, None, :]
    target_lengths = lengths // 8
    targets = torch.randint(1, 29, (batch_size, int(target_lengths.max())), generator=g)
    return Batch(features, lengths, targets, target_lengths).to(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=64, help="utterances per step")
    parser.add_argument("--frames", type=int, default=1000, help="feature frames of the longest utterance")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per precision")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("nccl", rank=0, world_size=1)
    device = torch.device("cuda", 0)
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
    batch = fixed_batch(args.batch_size, args.frames, device)
    ok = True
    for amp in ("off", "bf16", "fp16"):
        config = TrainConfig(train_data_dir="-", eval_data_dir="-", amp=amp, learning_rate=3e-4,
                             batch_size=args.batch_size, lr_schedule="constant", warmup_fraction=0.0)
        plan = make_plan(config, num_train_utterances=args.batch_size * (args.steps + 3))
        peak, precision = measure_matmul_peak(plan)
        trainer = Trainer(plan, matmul_peak=(peak, precision))
        if not isinstance(trainer.training_model, DistributedDataParallel):
            print("FAIL: the trainer did not wrap the model in DDP over the NCCL group")
            ok = False
        losses = []
        for step in range(args.steps + 3):
            if step == 3:
                torch.cuda.synchronize()
                start = time.perf_counter()
            losses.append(trainer.train_step(batch).loss)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        losses = [float(loss) for loss in losses]
        useful, _ = StepCosts(plan.model_args).batch_flops(batch.feature_lengths, batch.features.shape[2])
        tflops = float(useful) * args.steps / seconds / 1e12
        counter = WordErrorCounter()
        counter.update(["A B C"], ["A X C"])
        errors, words = counter.totals(device)   # all_reduce over NCCL
        falling = all(map(lambda v: v == v and abs(v) != float("inf"), losses)) and losses[-1] < losses[0]
        ok &= falling and (errors, words) == (1, 3)
        print(f"{amp:5s} loss {losses[0]:.2f} -> {losses[-1]:.2f} ({'falls' if falling else 'DOES NOT FALL'}), "
              f"{args.steps * args.batch_size / seconds:.0f} utt/s ({seconds / args.steps * 1000:.1f} ms/step), "
              f"{tflops:.1f} TFLOP/s ({100 * tflops * 1e12 / peak:.1f}% of the {precision} matmul peak "
              f"{peak / 1e12:.0f}), "
              f"NCCL all_reduce counts {errors}/{words}, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    dist.destroy_process_group()
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
