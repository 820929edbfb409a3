"""Throughput and model FLOPs utilisation of GKD's stage 1b (issue 7 §2).

The target: DINOv2-L -> DeiT-B at 512², bf16, at least 35% MFU on a GPU, batch 32 per GPU (the paper's 128 over
4 GPUs). FLOPs are counted (``kdbench.engine.flops``), forward and backward of one step, and the peak is the GPU's
data-sheet dense bf16 figure. Without a GPU the same step runs at CPU scale (DINOv2-B -> DeiT-S at 224², batch
4), against the rate this CPU reaches on one large matrix multiply at the same precision (a CPU has no data-sheet
peak its kernels reach). docs/performance.md lists the figures. Run:
``.venv/bin/pytest benchmarks/test_mfu.py --benchmark-enable -s`` (``KDBENCH_BENCH_ROUNDS`` sets the timed rounds).
"""

from __future__ import annotations

import os

import pytest
import torch

from kdbench.config import TrainConfig
from kdbench.engine.flops import measured_gemm_flops, spec_peak_flops, utilisation
from kdbench.engine.runtime import apply_speed_options
from kdbench.testing.timing import alternate, medians
from kdbench.testing.workloads import step_workload

GPU = torch.cuda.is_available()
if GPU:
    PAIR, SIZE, BATCH, ROUNDS, STEPS = "f2l-dinov2-l-deit-b", 512, 32, 10, 5
    CASES = [("bf16", False), ("bf16", True)]
else:
    PAIR, SIZE, BATCH, ROUNDS, STEPS = "f2l-dinov2-b-deit-s", 224, 4, 5, 2
    CASES = [("fp32", False), ("bf16", False)]
ROUNDS = int(os.environ.get("KDBENCH_BENCH_ROUNDS", ROUNDS))


@pytest.mark.parametrize(("precision", "compiled"), CASES, ids=[f"{p}-{'compiled' if c else 'eager'}"
                                                                for p, c in CASES])
def test_gkd_stage_1b_mfu(benchmark, precision, compiled):
    amp = "off" if precision == "fp32" else precision
    workload = step_workload("gkd", PAIR, "domain-agnostic", SIZE, BATCH, "cuda" if GPU else "cpu", amp)
    flops = workload.flops()
    if compiled:
        apply_speed_options(workload.method, TrainConfig(compile=True))
    rounds = 1 if benchmark.disabled else ROUNDS
    device = workload.runtime.device
    seconds = medians(alternate({"step": lambda: workload.run(STEPS)}, rounds, device))["step"] / STEPS
    if GPU:
        name = torch.cuda.get_device_name(device)
        peak, against = spec_peak_flops(name, precision), "data-sheet peak"
    else:
        name = f"cpu, {torch.get_num_threads()} threads"
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        peak, against = measured_gemm_flops(device, dtype), "measured 2048³ GEMM rate"
    share = utilisation(flops, seconds, peak) if peak else float("nan")
    print(f"\nGKD stage 1b {PAIR} {SIZE}² batch {BATCH} {precision}{' compiled' if compiled else ''} on {name}: "
          f"{1000 * seconds:.1f} ms/step, {BATCH / seconds:.1f} images/s, {flops / 1e12:.3f} TFLOP/step, "
          f"{flops / seconds / 1e12:.2f} TFLOP/s = {100 * share:.1f}% of the {against}"
          + (f" ({peak / 1e12:.1f} TFLOP/s)" if peak else " (unknown: set KDBENCH_PEAK_TFLOPS)"))
    benchmark.extra_info.update({"device": name, "precision": precision, "compiled": compiled,
                                 "ms_per_step": round(1000 * seconds, 2), "images_per_s": round(BATCH / seconds, 2),
                                 "tflop_per_step": round(flops / 1e12, 4), "peak_tflops": peak and peak / 1e12,
                                 "utilisation": round(share, 4)})
    benchmark.pedantic(lambda: None, rounds=1)
