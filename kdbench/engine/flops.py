"""Model FLOPs and FLOPs utilisation (MFU) of a training step.

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` records every matrix multiply,
convolution and attention kernel the step dispatches, forward and backward (elementwise work, norms and the
optimiser are not counted, as in the usual MFU definition of Chowdhery et al., PaLM, 2022, appendix B). MFU is
the counted FLOPs per second over the device's peak: the dense tensor-core figure from the vendor's data sheet
for known GPUs (:data:`GPU_PEAK_TFLOPS`), or ``KDBENCH_PEAK_TFLOPS`` where set. A CPU has no data-sheet figure
that its kernels can reach, so for CPUs :func:`measured_gemm_flops` gives the rate of one large matrix multiply
at the same precision and threads, and a step is reported against that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

#: Dense (no sparsity) bf16/fp16 tensor-core TFLOP/s from NVIDIA's data sheets, matched against
#: ``torch.cuda.get_device_name`` in this order (more specific names first).
GPU_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("V100", 125.0),  # fp16 only
)


def _cpu_flash_attention_flops(query, key, value, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_attention_backward_flops(grad_out, query, key, value, *args: Any, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


#: Kernels that some torch releases' counter leaves out (2.14 does not count the CPU flash-attention kernel
#: ``scaled_dot_product_attention`` dispatches to); counted here with torch's own attention formulas.
EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward_flops,
}


def counted_flops(fn: Callable[[], Any]) -> int:
    """The FLOPs that ``fn()`` dispatches (forward and, where ``fn`` runs it, backward)."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def spec_peak_flops(device_name: str, precision: str) -> float | None:
    """The data-sheet peak (FLOP/s) for a GPU name at ``precision`` ("bf16" or "fp16"); ``KDBENCH_PEAK_TFLOPS``
    overrides it; None where unknown (CPUs, fp32, an unlisted GPU)."""
    override = os.environ.get("KDBENCH_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    if precision not in ("bf16", "fp16"):
        return None
    for fragment, tflops in GPU_PEAK_TFLOPS:
        if fragment in device_name:
            return tflops * 1e12
    return None


def measured_gemm_flops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 8) -> float:
    """FLOP/s of a ``size``³ matrix multiply at ``dtype`` on ``device`` (best of ``repeats``): what this device's
    kernels reach at this precision and thread count."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        synchronise(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronise(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def utilisation(flops_per_step: float, seconds_per_step: float, peak_flops: float) -> float:
    """The fraction of ``peak_flops`` a step of ``flops_per_step`` taking ``seconds_per_step`` reaches."""
    return flops_per_step / seconds_per_step / peak_flops
