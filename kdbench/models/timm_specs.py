"""A timm model name (with its pretrained tag) -> a ModelSpec: the one code path for built-in, YAML and plugin
models that timm builds.

The backbone is ``timm.create_model(name, pretrained=False, **kwargs)`` at the run's image size; weights are
loaded by kdbench afterwards (``kdbench.models.timm_weights``), from a local file or the Hugging Face cache entry
the tag names (``hub``). Width and depth overrides (``kwargs``) build tiny random configs of a family for tests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import timm

from kdbench.errors import UserError, did_you_mean
from kdbench.models.spec import BUILT_IN, ROLES, ModelSpec

#: the patch the protocols' grids assume (GKD/Rein: 512 px crops on a 32x32 grid); a family whose native patch
#: differs (DINOv2 and EVA02 at 14) runs at this patch, its kernel and position embedding resampled on loading
PROTOCOL_PATCH = 16
VIT_MODULES = ("timm.models.vision_transformer", "timm.models.eva", "timm.models.deit")
_PATCH = re.compile(r"patch(\d+)")


def timm_spec(name: str, timm_name: str, role: str, description: str = "", *, weights: str = "hub",
              patch: int | None = PROTOCOL_PATCH, out_indices: tuple[int, ...] | None = None,
              kwargs: dict[str, Any] | None = None, arch: str | None = None, origin: str = BUILT_IN) -> ModelSpec:
    """The spec of ``timm_name`` (``architecture.tag``) as model ``name``.

    ``weights``: "hub" (the offline Hugging Face cache entry of the tag; a ``weights.<name>`` file still wins)
    or a local file path. ``patch``: the patch size the model runs at (None: its native one). ``kwargs``: timm
    constructor overrides (``embed_dim``, ``depth``, ... for tiny test configs). ``arch``: "vit" or "cnn"
    (default: from the timm module that defines the architecture)."""
    where = f"model {name} ({origin})"
    architecture, _, tag = timm_name.partition(".")
    if not timm.is_model(architecture):
        raise UserError(f"{where}: timm has no model {architecture!r};{did_you_mean(architecture, timm.list_models())}"
                        f" see timm.list_models()")
    if tag and timm_name not in timm.list_models(architecture, pretrained=True):
        tags = [n.partition(".")[2] for n in timm.list_models(architecture, pretrained=True)]
        raise UserError(f"{where}: timm has no pretrained tag {tag!r} for {architecture}; its tags: "
                        f"{', '.join(tags) or 'none'}")
    if role not in ROLES:
        raise UserError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    module = timm.models.model_entrypoint(architecture).__module__
    arch = arch or ("vit" if module in VIT_MODULES else "cnn")
    if arch not in ("vit", "cnn"):
        raise UserError(f"{where}: arch must be vit or cnn, not {arch!r}")
    hub, weights_file = "", ""
    if weights == "hub":
        if tag:
            hub = timm.models.get_pretrained_cfg(timm_name).hf_hub_id or ""
    elif weights:
        weights_file = str(Path(weights).expanduser())
    built: dict[str, Any] = {"timm_name": timm_name, **(kwargs or {})}
    if out_indices is not None:
        built["out_indices"] = tuple(out_indices)
    native = _PATCH.search(architecture)
    if arch == "vit" and patch is not None and "patch_size" not in built and (
            native is None or int(native.group(1)) != patch):
        built["patch_size"] = patch
    source = f"hub {hub}" if hub else (f"file {weights_file}" if weights_file else "a weights.<model> file")
    description = f"{description} (timm {timm_name})" if description else f"timm {timm_name} (weights: {source})"
    return ModelSpec(name, arch, "file", description, built,
                     "timm", role=role, backend="timm", hub=hub, weights_file=weights_file, origin=origin)
