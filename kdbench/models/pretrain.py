"""Pretrained backbones and teachers for the synthetic suites, trained once and cached by content hash.

Real foundation models arrive as weight files; the synthetic world has none, so kdbench makes its own. A
"foundation" backbone is trained with supervision on a broad domain-randomised stream of urban and aerial scenes
that keeps away from every target look of the suite; a "local" backbone only on the narrow proxy stream. (Real
DINOv2 is self-supervised; supervised pretraining is the stand-in that fits a CPU budget of minutes.) The
teacher's task head is then trained on the benchmark's labelled source with the teacher backbone frozen, as the
paper's teacher row is a frozen DINOv2 with a decode head trained on the source.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch

from kdbench.cache_folder import cache_root
from kdbench.config import Config
from kdbench.data.domains import get_domain
from kdbench.data.loaders import StageData
from kdbench.data.real.holdout import RULE as HOLDOUT_RULE
from kdbench.data.sources import domain_classes, is_real
from kdbench.data.synthetic import PretrainStream, make_split, to_float
from kdbench.engine.optim import param_groups
from kdbench.engine.runtime import Runtime
from kdbench.engine.trainer import train_steps
from kdbench.errors import UserError
from kdbench.method import Batch, Method
from kdbench.models.checkpoints import atomic_save, file_digest, load_state, load_weights, read_state_dict
from kdbench.models.heads import make_head
from kdbench.models.segmentor import LightHead, Segmentor
from kdbench.models.zoo import ModelSpec

Notify = Callable[[str], None]
CACHE_VERSION = 3  # bump when generator or pretraining code changes what a cached file would contain
PRETRAIN_SCENES = ("urban", "aerial")


def cache_dir(cfg: Config) -> Path:
    return cache_root(cfg.pretrain.cache_dir)


def content_key(payload: dict) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def backbone_key(spec: ModelSpec, cfg: Config, excluded: list[str]) -> str:
    steps = cfg.pretrain.foundation_steps if spec.pretrain == "randomised" else cfg.pretrain.proxy_steps
    return content_key({"model": spec.name, "arch": spec.arch, "kwargs": spec.kwargs, "pretrain": spec.pretrain,
                        "steps": steps, "batch": cfg.pretrain.batch_size, "lr": cfg.pretrain.lr,
                        "size": cfg.data.image_size, "scenes": PRETRAIN_SCENES,
                        "excluded": sorted(excluded) if spec.pretrain == "randomised" else []})


def file_backbone(spec: ModelSpec, cfg: Config, runtime: Runtime) -> tuple[torch.nn.Module, str]:
    """A real model's backbone from the weight file named by ``weights.<model>`` (official DINOv2 / DeiT / timm
    formats, resampled to the run's image size by ``kdbench.models.weights``); a timm-built model's from that file,
    its declared one, or its offline Hugging Face cache entry."""
    from kdbench.models.weights import load_pretrained

    if spec.backend == "timm":  # a weights.<model> file, the declared one, or the offline Hugging Face cache
        from kdbench.models.hub import weights_path

        path = str(weights_path(spec, cfg.weights))
    else:
        path = cfg.weights.get(spec.name, "")
    if not path:
        raise UserError(f"model {spec.name} loads its weights from a file: set weights.{spec.name}=PATH "
                        f"(e.g. --set weights.{spec.name}=/weights/<file>.pth)")
    backbone = spec.build_backbone(cfg.data.image_size)
    load_pretrained(spec, backbone, path)  # a missing or unfitting file is a UserError naming it
    return backbone.to(runtime.device), content_key({"file": file_digest(path), "size": cfg.data.image_size})


def pretrained_backbone(spec: ModelSpec, cfg: Config, excluded: list[str], runtime: Runtime,
                        notify: Notify = print) -> tuple[torch.nn.Module, str]:
    """The backbone of ``spec`` after its pretraining, from the cache or trained now (and cached); a real model's
    from its weight file."""
    if spec.pretrain == "file":
        return file_backbone(spec, cfg, runtime)
    key = backbone_key(spec, cfg, excluded)
    path = cache_dir(cfg) / f"backbone-{spec.name}-{key}.pt"
    backbone = spec.build_backbone(cfg.data.image_size)
    if path.is_file():
        load_weights(backbone, path)
        return backbone.to(runtime.device), key
    steps = cfg.pretrain.foundation_steps if spec.pretrain == "randomised" else cfg.pretrain.proxy_steps
    notify(f"pretraining {spec.name} on the {spec.pretrain} stream for {steps} steps (once; cached as {path})")
    start = time.perf_counter()
    stream = PretrainStream(spec.pretrain, PRETRAIN_SCENES, cfg.data.image_size, cfg.pretrain.batch_size, seed=0,
                            exclude=[get_domain(d) for d in excluded] if spec.pretrain == "randomised" else [])
    torch.manual_seed(0)
    model = Segmentor(backbone, LightHead(backbone.level_channels, len(stream.classes))).to(runtime.device)
    model.train()

    def batches() -> Iterator[Batch]:
        for images, labels in stream:
            yield Batch(to_float(images).to(runtime.device), labels.long().to(runtime.device))

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        return {"task": Method.task_loss(model(batch.images), batch)}

    groups = param_groups({"all": (list(model.parameters()), cfg.pretrain.lr)}, cfg.train.weight_decay)
    train_cfg = _pretrain_train_cfg(cfg)
    train_steps(step, groups, batches(), steps, train_cfg, runtime, f"pretrain {spec.name} ({spec.pretrain})")
    atomic_save(backbone.state_dict(), path)
    notify(f"pretrained {spec.name} in {time.perf_counter() - start:.0f} s")
    return backbone, key


def load_cached_teacher(teacher: Segmentor, path: Path) -> None:
    """Load a cached teacher: its trained head alone, since the frozen backbone is cached (or given) on its own.
    A file written before the cache held heads alone holds the whole segmentor, the same backbone included, and
    loads as it is."""
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        load_state(teacher, state, f"cached teacher {path}")
    else:
        load_state(teacher.head, state, f"cached teacher head {path}")


def teacher_segmentor(spec: ModelSpec, cfg: Config, excluded: list[str], source: str, runtime: Runtime,
                      notify: Notify = print, source_batches: Callable[[int], Iterator[Batch]] | None = None
                      ) -> tuple[Segmentor, str]:
    """The teacher for a benchmark: its backbone (pretrained, loaded from ``pretrain.teacher_weights``, or a real
    model's weight file), frozen, with a decode head (``cfg.head``) trained on ``source``; the head is cached.
    ``source_batches(batch_size)`` serves the labelled source batches (default: the synthetic source split)."""
    if cfg.pretrain.teacher_weights:
        backbone = spec.build_backbone(cfg.data.image_size)
        load_weights(backbone, cfg.pretrain.teacher_weights)
        backbone = backbone.to(runtime.device)
        bkey = content_key({"file": str(Path(cfg.pretrain.teacher_weights).resolve()),
                            "mtime": Path(cfg.pretrain.teacher_weights).stat().st_mtime_ns})
    else:
        backbone, bkey = pretrained_backbone(spec, cfg, excluded, runtime, notify)
    classes = domain_classes(source)
    payload = {"backbone": bkey, "source": source, "steps": cfg.pretrain.head_steps,
               "batch": cfg.pretrain.batch_size, "lr": cfg.pretrain.lr, "size": cfg.data.image_size,
               "train_images": cfg.data.train_images}
    if cfg.head != "light":
        payload["head"] = cfg.head
    if spec.pretrain == "file":
        payload["schedule"] = [cfg.train.schedule, cfg.train.warmup]
    if is_real(source):  # trained on the source list less its validation slice
        payload["holdout"] = HOLDOUT_RULE
    key = content_key(payload)
    path = cache_dir(cfg) / f"teacher-{spec.name}-{source}-{key}.pt"
    torch.manual_seed(0)
    teacher = Segmentor(backbone, make_head(cfg.head, backbone, len(classes))).to(runtime.device)
    if path.is_file():
        load_cached_teacher(teacher, path)
    else:
        notify(f"training the {spec.name} teacher's head on {source} for {cfg.pretrain.head_steps} steps (once)")
        for p in backbone.parameters():
            p.requires_grad_(False)
        backbone.eval()
        teacher.head.train()
        if source_batches is None:
            domain = get_domain(source)
            train = make_split(domain, "train", cfg.data.train_images, cfg.data.image_size)
            data = StageData(train, domain.scene, cfg.data.image_size, runtime.device)
            batches = data.batches("source", cfg.pretrain.batch_size, seed=0)
        else:
            batches = source_batches(cfg.pretrain.batch_size)

        def step(batch: Batch) -> dict[str, torch.Tensor]:
            return {"task": Method.task_loss(teacher(batch.images), batch)}

        groups = param_groups({"head": (list(teacher.head.parameters()), cfg.pretrain.lr)}, cfg.train.weight_decay)
        train_cfg = _pretrain_train_cfg(cfg)
        if spec.pretrain == "file":  # the paper's teacher row: the head trained with stage 2's schedule
            train_cfg = replace(train_cfg, schedule=cfg.train.schedule, warmup=cfg.train.warmup)
        train_steps(step, groups, batches, cfg.pretrain.head_steps, train_cfg, runtime,
                    f"teacher head {spec.name} on {source}")
        atomic_save(teacher.head.state_dict(), path)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, key


def _pretrain_train_cfg(cfg: Config):
    return replace(cfg.train, warmup=0.05, schedule="cosine", grad_clip=1.0, backbone_lr_mult=1.0,
                   log_every=max(1, cfg.train.log_every))
