"""Loading and saving weights: local files only, atomic writes, errors that name the file and the keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from kdbench.errors import UserError
from kdbench.results import atomic_write


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``.pt``/``.pth``; a ``model`` or ``state_dict`` entry
    is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"weights file {path} could not be read: {exc}") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} holds no state dict")
    return state


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``module`` strictly; a mismatch is a UserError naming the file and the first keys."""
    load_state(module, read_state_dict(path), f"weights file {path}")


def load_state(module: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``module`` strictly; a mismatch is a UserError naming ``origin`` and the first keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if shape:
        k = shape[0]
        problems.append(f"shape mismatch at {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
                        + (f" (and {len(shape) - 1} more)" if len(shape) > 1 else ""))
    if problems:
        raise UserError(f"{origin} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(state)


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, computed once per process for each (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def state_digest(module: nn.Module) -> str:
    """A short SHA-256 of ``module``'s weights and buffers (names, shapes, bytes): the fingerprint records carry,
    so runs trained from differently pretrained models can be told apart."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]
