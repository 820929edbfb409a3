"""Models declared as data: a ``models:`` section of a suite YAML or a ``--config`` file, or a plugin's entry
point in the ``kdbench.models`` group. Each is a timm model, built through the same code path as the built-ins
(``kdbench.models.timm_specs.timm_spec``)::

    models:
      dinov3-h-plus:
        timm: vit_huge_plus_patch16_dinov3.lvd1689m   # timm name with its pretrained tag
        role: foundation                              # or local: decides a composed pair's kind
        weights: hub                                  # the tag's offline Hugging Face cache entry, or a file path
        patch: 16                                     # the patch it runs at (default 16), or native
        out_indices: [7, 15, 23, 31]                  # blocks or stages read out (default: by depth)
        kwargs: {}                                    # timm constructor overrides (depth, embed_dim, ...)
        description: DINOv3 ViT-H+/16
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from kdbench.errors import UserError, did_you_mean
from kdbench.models.spec import MODELS, ModelSpec
from kdbench.models.timm_specs import PROTOCOL_PATCH, timm_spec

FIELDS = ("timm", "role", "weights", "patch", "out_indices", "kwargs", "arch", "description")


def model_from_mapping(name: str, data: Any, origin: str) -> ModelSpec:
    """The spec a YAML mapping declares (fields as in the module docstring); a bad field is a UserError."""
    where = f"{origin}: model {name!r}"
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a mapping with at least 'timm' and 'role'")
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r};{did_you_mean(str(unknown[0]), FIELDS)} fields: "
                        f"{', '.join(FIELDS)}")
    for key in ("timm", "role"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{where} needs {key!r} (a string)")
    patch = data.get("patch", PROTOCOL_PATCH)
    if patch != "native" and (isinstance(patch, bool) or not isinstance(patch, int) or patch < 1):
        raise UserError(f"{where}: patch must be a positive integer or 'native', not {patch!r}")
    indices = data.get("out_indices")
    if indices is not None and (not isinstance(indices, list) or not all(isinstance(i, int) for i in indices)):
        raise UserError(f"{where}: out_indices must be a list of integers")
    kwargs = data.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise UserError(f"{where}: kwargs must be a mapping of timm constructor arguments")
    weights = data.get("weights", "hub")
    if not isinstance(weights, str) or not weights:
        raise UserError(f"{where}: weights must be 'hub' or a file path")
    spec = timm_spec(name, data["timm"], data["role"], str(data.get("description") or ""), weights=weights,
                     patch=None if patch == "native" else patch, out_indices=indices, kwargs=dict(kwargs),
                     arch=data.get("arch"), origin=origin)
    try:
        with torch.device("meta"):  # the settings checked, nothing allocated
            spec.build_backbone(2 * (patch if isinstance(patch, int) else PROTOCOL_PATCH))
    except Exception as exc:
        raise UserError(f"{where}: timm cannot build {data['timm']} with these settings: "
                        f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    return spec


def declare_models(section: Any, origin: str) -> tuple[ModelSpec, ...]:
    """Register every model of a ``models:`` section (``origin``: "suite NAME" or "config FILE")."""
    if section is None:
        return ()
    if not isinstance(section, Mapping):
        raise UserError(f"{origin}: 'models' must be a mapping of model names to their fields")
    return tuple(MODELS.declare(model_from_mapping(str(name), data, origin)) for name, data in section.items())


def register_specs(specs: tuple[ModelSpec, ...]) -> None:
    """Register specs declared elsewhere (a suite's models, after the suite crossed a process boundary)."""
    for spec in specs:
        MODELS.declare(spec)


def plugin_model(name: str, obj: Any, entry_point: Any) -> ModelSpec:
    """The model an entry point names: a ModelSpec, or a mapping of the YAML fields."""
    dist = getattr(getattr(entry_point, "dist", None), "name", None) or "?"
    origin = f"plugin {dist} ({entry_point.value})"
    if isinstance(obj, ModelSpec):
        if obj.name != name:
            raise UserError(f"{origin}: entry point {name!r} names model {obj.name!r}; the names must agree")
        return replace(obj, origin=origin)
    return model_from_mapping(name, obj, origin)
