"""What a model and a pair are, and the two registries that hold them (``kdbench.models.zoo`` fills them).

A model is data: a :class:`ModelSpec` names the backbone (kdbench's own ViT/CNN classes, or any timm model by
name), its role (a foundation model or a locally pretrained one, which makes a pair F2F or F2L) and where its
weights come from (kdbench's synthetic pretraining, a local file, or the offline Hugging Face cache). Models come
from four places, shown by ``kdbench list models``: built in, a suite YAML's or a ``--config`` file's ``models:``
section, or a plugin's entry point in the ``kdbench.models`` group (naming a ``ModelSpec`` or a mapping of the
YAML fields, see ``kdbench.models.declare``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from kdbench.errors import UserError
from kdbench.registry import Registry

PRETRAIN_KINDS = {"randomised": "broad domain-randomised stream (foundation)",
                  "proxy": "narrow proxy distribution (local, as ImageNet)",
                  "file": "official pretrained weights: a local file, or the offline Hugging Face cache"}
ROLES = {"foundation": "a foundation model (DINOv2, DINOv3, EVA02, ...): a pair with a foundation student is F2F",
         "local": "a locally (ImageNet-) pretrained model (DeiT, ConvNeXt, ResNet): a pair with a local student is F2L"}
BUILT_IN = "built-in"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str
    pretrain: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: for ``pretrain="file"`` models, how ``weights.load_pretrained`` reads their file: "dinov2", "deit",
    #: "timm-cnn" (kdbench's own backbones) or "timm" (any timm model, official or timm key layout); None for the
    #: synthetic models
    weights_format: str | None = None
    #: "foundation" or "local"; "" for the models that predate roles (derived, see :attr:`model_role`)
    role: str = ""
    #: "timm": the backbone is ``timm.create_model(kwargs["timm_name"], **overrides)``; "" kdbench's classes
    backend: str = ""
    #: the Hugging Face repo id whose offline cache entry holds the weights ("" = none: a file is needed)
    hub: str = ""
    #: a weight file declared with the model (``weights.<model>`` given on the command line wins)
    weights_file: str = ""
    #: where the model was declared: "built-in", "suite NAME", "config FILE" or "plugin DIST (module:object)"
    origin: str = BUILT_IN

    @property
    def model_role(self) -> str:
        """The role that decides a composed pair's kind: ``role`` if set, else what the pretraining says."""
        if self.role:
            return self.role
        foundation = self.pretrain == "randomised" or self.weights_format == "dinov2"
        return "foundation" if foundation else "local"

    def build_backbone(self, image_size: int) -> nn.Module:
        if self.backend == "timm":
            from kdbench.models.timm_backbones import TimmCNNBackbone, TimmViTBackbone

            if self.arch == "vit":
                return TimmViTBackbone(img_size=image_size, **self.kwargs)
            return TimmCNNBackbone(**self.kwargs)
        from kdbench.models.backbones import CNNBackbone, ViTBackbone

        if self.arch == "vit":
            return ViTBackbone(img_size=image_size, **self.kwargs)
        if self.arch == "cnn":
            return CNNBackbone(**self.kwargs)
        raise ValueError(f"unknown arch {self.arch!r}")


@dataclass(frozen=True)
class Pair:
    name: str
    teacher: str
    student: str
    kind: str
    description: str


class ModelRegistry(Registry[ModelSpec]):
    """The model registry: entry points in ``kdbench.models`` name a ``ModelSpec`` or a mapping of YAML fields;
    models declared in YAML may be declared again by the same file (it was edited and re-read)."""

    def get(self, name: str) -> ModelSpec:
        if name not in self._items and name in self._discover():
            from kdbench.models.declare import plugin_model

            ep = self._discover()[name]
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not take the whole tool down with a traceback
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise UserError(f"model {name!r} failed to load from {ep.value}: {reason}") from exc
            self._items[name] = plugin_model(name, obj, ep)
        return super().get(name)

    def declare(self, spec: ModelSpec) -> ModelSpec:
        """Register ``spec``; a name taken by another model is a UserError naming both origins."""
        existing = self._items.get(spec.name)
        if existing is None and spec.name in self._discover():
            existing = self.get(spec.name)
        same = existing is not None and replace(existing, origin=spec.origin) == spec
        if existing is not None and not same and existing.origin != spec.origin:
            raise UserError(f"model {spec.name!r} of {spec.origin} is already declared by {existing.origin}; "
                            f"give it another name")
        if existing is None or existing.origin == spec.origin:
            self._items[spec.name] = spec
        return self._items[spec.name]


MODELS: ModelRegistry = ModelRegistry("model", entry_point_group="kdbench.models")
PAIRS: Registry[Pair] = Registry("pair")
