"""Where a real model's weights come from: its ``weights.<model>`` file, the file its declaration names, or its
entry in the Hugging Face cache, read offline.

kdbench never downloads: it reads the cache that ``hf download REPO`` (or timm, on a machine with network) fills,
under ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (read when asked, so a changed
environment is seen), whatever ``HF_HUB_OFFLINE`` says. A missing entry is one line naming the repo id and the
command that fetches it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kdbench.errors import UserError
from kdbench.models.spec import ModelSpec

#: the weight files a timm repo on the Hub may hold, in timm's order of preference
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def cached_hub_file(repo: str, model: str) -> Path:
    """The cached weight file of ``repo`` (its ``main`` snapshot), or a UserError saying how to fetch it."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache()
    for filename in HUB_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=str(cache))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    raise UserError(f"model {model}: {repo} is not in the Hugging Face cache {cache} (read offline); fetch it on a "
                    f"machine with network with `hf download {repo}` and copy the cache here, or set "
                    f"weights.{model}=FILE")


def weights_path(spec: ModelSpec, weights: Mapping[str, str]) -> Path:
    """The file ``spec``'s weights are read from: ``weights[spec.name]`` (``weights.<model>``), the declared
    file, or the Hugging Face cache entry; a UserError naming what to set where there is none."""
    path = weights.get(spec.name) or spec.weights_file
    if path:
        if not Path(path).is_file():
            raise UserError(f"weights.{spec.name}: weights file {path} does not exist")
        return Path(path)
    if spec.hub:
        return cached_hub_file(spec.hub, spec.name)
    raise UserError(f"model {spec.name} loads its weights from a file: set weights.{spec.name}=PATH (e.g. --set "
                    f"weights.{spec.name}=/weights/<official checkpoint>)")
