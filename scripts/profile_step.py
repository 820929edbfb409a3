"""Where one training step's time goes: a method's stage under ``torch.profiler``, summed by kernel kind (issue 21).

The workload is the speed benchmarks' (``kdbench.testing.workloads.step_workload``: random weights, a fixed random
batch, the run's own ``train_steps``). After ``--warmup`` steps, ``--steps`` steps are profiled; the summary sums
device time (GPU kernels; on a CPU, the self time of aten operators) into matrix multiplies, attention,
normalisation, elementwise/other and optimiser kernels, and gives the share of the step's wall time the device
was busy. ``--out`` also gets torch's own table of the 30 most expensive kernels or operators.

    python scripts/profile_step.py --out /tmp/profile.txt                        # GKD 1b, DINOv2-L -> DeiT-B, 512²
    python scripts/profile_step.py --pair f2l-dinov2-b-deit-s --size 224 --batch 2 --amp off   # a CPU's scale
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from kdbench.engine.flops import synchronise
from kdbench.testing.workloads import step_workload

#: kernel (or operator) name patterns per kind, tried in order; the first match wins
KINDS: tuple[tuple[str, str], ...] = (
    ("optimiser", r"adam|multi_tensor|foreach|_fused_adam"),
    ("attention", r"flash|fmha|attention|sdpa|softmax"),
    ("matmul", r"gemm|sm90_|cutlass|nvjet|cublas|addmm|::mm|::bmm|matmul|::linear|conv"),
    ("normalisation", r"layer_norm|layernorm|group_norm|batch_norm|rms_norm|norm_"),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, lowered)), "elementwise/other")


def device_times(prof: profile, gpu: bool) -> dict[str, float]:
    """Microseconds per kernel (GPU) or per operator's self CPU time (CPU), by name."""
    times: dict[str, float] = defaultdict(float)
    if gpu:
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                times[event.name] += event.time_range.elapsed_us()
    else:
        for event in prof.key_averages():
            if event.key.startswith("aten::"):
                times[event.key] += event.self_cpu_time_total
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="gkd")
    parser.add_argument("--stage", default="domain-agnostic")
    parser.add_argument("--pair", default="f2l-dinov2-l-deit-b")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--amp", default="bf16", help="off, bf16 or fp16")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    workload = step_workload(args.method, args.pair, args.stage, args.size, args.batch, "cuda" if gpu else "cpu",
                             args.amp)
    device = workload.runtime.device
    flops = workload.flops()
    workload.run(args.warmup)
    synchronise(device)
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu else [])]
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        workload.run(args.steps)
        synchronise(device)
        wall_us = (time.perf_counter() - start) * 1e6 / args.steps
    times = device_times(prof, gpu)
    busy = sum(times.values()) / args.steps
    by_kind: dict[str, float] = defaultdict(float)
    for name, us in times.items():
        by_kind[kind_of(name)] += us / args.steps
    where = torch.cuda.get_device_name(device) if gpu else f"cpu, {torch.get_num_threads()} threads"
    lines = [f"{args.method} {args.stage} {args.pair} {args.size}² batch {args.batch} amp {args.amp} on {where}: "
             f"{wall_us / 1000:.1f} ms/step under the profiler, {flops / 1e12:.3f} TFLOP/step counted, "
             f"{'device busy' if gpu else 'operator self time'} {busy / 1000:.1f} ms/step "
             f"({100 * busy / wall_us:.0f}% of the step)", "",
             "| kind | ms/step | share of busy time |", "|---|---|---|"]
    lines += [f"| {kind} | {us / 1000:.2f} | {100 * us / busy:.1f}% |"
              for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    lines += ["", "The most expensive kernels (ms/step, kind):"]
    lines += [f"  {us / 1000 / args.steps:8.2f}  {kind_of(name):<17}  {name[:110]}"
              for name, us in sorted(times.items(), key=lambda kv: -kv[1])[:30]]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
