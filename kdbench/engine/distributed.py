"""One run on several processes: PyTorch DistributedDataParallel, started by ``torchrun`` (or ``kdbench run
--nproc N``, which starts torchrun for you).

Every process builds the same global batch from the same seed and trains on its own contiguous slice of it
(``shard``), so N processes at a global batch B follow the trajectory of one process at batch B: DDP averages the
gradients of equal slices, which is the gradient of the whole batch's mean loss. BatchNorm layers are synchronised
across processes: ``torch.nn.SyncBatchNorm`` on GPUs, and on CPU (gloo), where PyTorch's has no kernel,
``CPUSyncBatchNorm`` below, which all-reduces the batch statistics through a differentiable all-reduce. Logged loss
terms are averaged over processes. Only rank 0 writes (run directories, records, logs, checkpoints, report) and
prints; shared preparation (pretraining caches) runs on rank 0 first, the others then read its cache.

Limits: every process renders or indexes the whole global batch before slicing (simple, wasteful for big
batches); a method's per-batch choices (GKD masks the first half of *each process's* slice) follow the slice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from kdbench.data.loaders import INPUT_IDS
from kdbench.errors import UserError
from kdbench.method import Batch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()
_current = SINGLE


def current() -> DistInfo:
    return _current


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1); else a single process."""
    global _current
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _current = SINGLE
        return _current
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    _current = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return _current


def barrier() -> None:
    if _current.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the body first (it fills caches); the other ranks run it after, reading those caches."""
    if _current.enabled and not _current.is_main:
        dist.barrier()
    yield
    if _current.enabled and _current.is_main:
        dist.barrier()


def check_batch(batch_size: int, info: DistInfo) -> None:
    if info.enabled and batch_size % info.world:
        raise UserError(f"train.batch_size={batch_size} must be divisible by the number of processes ({info.world})")


def check_process_gpus(processes: int, device: str) -> None:
    """One run on ``processes`` DDP processes takes one GPU each wherever it runs on GPUs (``device`` auto with a
    GPU visible, or cuda): refuse more processes than GPUs visible, before any process starts."""
    import torch

    if processes <= 1 or device == "cpu" or not torch.cuda.is_available():
        return
    visible = torch.cuda.device_count()
    if processes > visible:
        raise UserError(f"--nproc {processes} trains on one GPU per process, but {visible} GPU(s) are visible here; "
                        f"use --nproc {visible} or fewer, or --device cpu (gloo processes)")


def shard(batch: Batch, info: DistInfo) -> Batch:
    """This process's contiguous slice of the global batch (a batch its loader already sharded stays as it is)."""
    if not info.enabled or batch.meta.get("sharded"):
        return batch
    size = batch.images.shape[0] // info.world
    part = slice(info.rank * size, (info.rank + 1) * size)
    meta = {k: v[part] for k, v in batch.meta.items() if k == INPUT_IDS}
    return Batch(images=batch.images[part], labels=None if batch.labels is None else batch.labels[part], meta=meta)


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over processes; the tensor itself in a single process."""
    if not _current.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / _current.world


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes, differentiable: the gradient of a sum over processes is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the global batch of every process, for CPU process groups
    (PyTorch's ``SyncBatchNorm`` runs on GPUs only). Mean and variance come from all-reduced sums through
    a differentiable all-reduce, so gradients flow across processes as in one big batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        stats = _AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        channels = x.shape[1]
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels:2 * channels] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach() * n / (n - 1))
        shape = (1, channels, 1, 1)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm in ``module`` by its synchronised form (in place where possible; returns it)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, CPUSyncBatchNorm):
            synced = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            sync_batchnorm(child, device_type)
    return module
