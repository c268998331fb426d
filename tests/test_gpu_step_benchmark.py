"""measure/gpu_step_benchmark.py, rehearsed end to end on the CPU at tiny sizes: the script a GPU job runs."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_benchmark_runs_every_row_and_parity_at_tiny_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "measure/gpu_step_benchmark.py", "--device", "cpu", "--tiny",
                           "--batch_sizes", "2", "--steps", "2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ALL PARITY CHECKS PASSED" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["matmul_peak_tflops"]) == {"off", "bf16"}
    assert {(c["rnn_impl"], c["amp"]) for c in result["parity"]} == {
        (impl, amp) for impl in ("packed", "streams") for amp in ("off", "bf16")}
    rows = {(r["rnn_impl"], r["amp"], r["batch_size"]): r for r in result["rows"]}
    assert set(rows) == {(impl, amp, 2) for impl in ("padded", "packed", "streams") for amp in ("off", "bf16")}
    for amp in ("off", "bf16"):
        assert rows["streams", amp, 2]["status"].startswith("skipped: needs CUDA")
        for impl in ("padded", "packed"):
            row = rows[impl, amp, 2]
            assert row["status"] == "ok" and row["utterances_per_second"] > 0 and row["tflops"] > 0
            assert 0 < row["fraction_of_peak"] < 1.5 and 0 <= row["padding"] < 0.5
            assert row["audio_seconds_per_second"] > row["utterances_per_second"] * 0.5   # ~1.2 s utterances
    table = [line.split() for line in done.stdout.splitlines()]
    assert ["padded", "off", "2"] in [line[:3] for line in table]
