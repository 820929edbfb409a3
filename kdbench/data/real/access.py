"""What a sweep reads of the real datasets: sample lists (found once), training streams, evaluation loaders.

Every dataset's training split is cut once into training images and a held-out validation slice
(:mod:`kdbench.data.real.holdout`): training streams draw from the first part only, :meth:`RealData.val_loader`
scores the slice (a source's source-val, a target's target-val) and :meth:`RealData.eval_loader` the test split,
which never holds a validation image. Mapillary, never trained on, is converted with its slice already cut
(the catalog's ``held_out`` split, cut by ``data prepare`` from the raw training list): read in full, never cut
again."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from kdbench.config import Config
from kdbench.data.real.catalog import DatasetSpec, get_dataset
from kdbench.data.real.files import dataset_root, holds_split, read_image, read_label, split_samples
from kdbench.data.real.holdout import hold_out
from kdbench.data.real.streams import (
    EvalImages,
    ImageItem,
    RealBatchStream,
    TrainImages,
    eval_loader,
    proxy_items,
)
from kdbench.data.synthetic import stable_seed
from kdbench.engine.distributed import DistInfo
from kdbench.errors import UserError


def data_cache_dir(setting: str = "") -> Path:
    """Where ``kdbench data prepare`` writes converted datasets: ``setting`` (``data.cache_dir``, ``--cache``),
    ``$KDBENCH_DATA_CACHE``, or ``~/.cache/kdbench/data``."""
    root = setting or os.environ.get("KDBENCH_DATA_CACHE") or Path.home() / ".cache" / "kdbench" / "data"
    return Path(root)


class RealData:
    """The real datasets of one sweep, rooted at ``data.root`` (per-dataset ``data.paths`` overrides, converted
    datasets in :func:`data_cache_dir`). Images without a label file refuse their split, or with
    ``data.missing_labels=skip`` are left out, warned about and counted (:meth:`images_without_labels`)."""

    def __init__(self, cfg: Config, device: torch.device, info: DistInfo):
        if not cfg.data.root and not cfg.data.paths:
            raise UserError("this suite reads real datasets: give --data-root DIR (or data.root / data.paths.<name>)")
        self.cfg, self.device, self.info = cfg, device, info
        self.cache = data_cache_dir(cfg.data.cache_dir)
        self._items: dict[tuple[str, str], list[ImageItem]] = {}
        self._proxy: list[ImageItem] | None = None
        self._unlabelled: dict[tuple[str, str], int] = {}
        self._without_val: set[str] = set()

    def spec(self, name: str) -> DatasetSpec:
        return get_dataset(name)

    def items(self, name: str, split: str, limit: int = 0) -> list[ImageItem]:
        """The split's (image, label) files in sorted order, the first ``limit`` of them (0 = all)."""
        key = (name, split)
        if key not in self._items:
            spec = self.spec(name)
            root = self.root(name)
            if spec.prepared:
                _refuse_unfinished(name, root, self.cache)
            samples, skipped = split_samples(spec, root, split, self.cfg.data.missing_labels)
            if skipped:
                self._unlabelled[key] = len(skipped)
                warnings.warn(f"dataset {name}: {len(skipped)} {split} image(s) without a label file left out "
                              f"(data.missing_labels=skip), e.g. {skipped[0].image}", stacklevel=2)
            if not samples:
                raise UserError(f"dataset {name}: no images in its {split} split under {root}")
            self._items[key] = [ImageItem(s.image, s.label) for s in samples]
        items = self._items[key]
        return items[:limit] if limit else items

    def root(self, name: str) -> Path:
        """The folder ``name`` is read from (:func:`~kdbench.data.real.files.dataset_root`)."""
        return dataset_root(self.spec(name), Path(self.cfg.data.root), self.cfg.data.paths, self.cache)

    def images_without_labels(self, names: Iterable[str]) -> dict[str, int]:
        """How many images of each split of ``names`` read so far were left out for want of a label file
        (``data.missing_labels=skip``), keyed ``"<dataset>/<split>"``; only splits that lost some (empty: none)."""
        wanted = set(names)
        return {f"{name}/{split}": count for (name, split), count in sorted(self._unlabelled.items())
                if name in wanted}

    def train_items(self, name: str, kind: str) -> list[ImageItem]:
        """The images a training stream of ``kind`` draws from: the proxy folder, or ``name``'s training split
        without its validation slice, the first ``data.train_images`` of the rest (0 = all)."""
        if kind == "proxy":  # listed once: an ImageNet folder holds over a million files
            if self._proxy is None:
                self._proxy = proxy_items(self.cfg.data.proxy_root)
            return self._proxy
        train, _ = hold_out(self.items(name, self.spec(name).train_split))
        return _first(train, self.cfg.data.train_images)

    def test_items(self, name: str) -> list[ImageItem]:
        """The images ``name`` is scored on as a test split: its evaluation split, the first ``eval.images`` (0 =
        all). A synthetic source scored on its own training split (GTA5) is scored on its training images only,
        never on its validation slice."""
        spec = self.spec(name)
        items = self.items(name, spec.eval_split)
        if spec.eval_split == spec.val_split:
            items, _ = hold_out(items)
        return _first(items, self.cfg.eval.images)

    def val_items(self, name: str) -> list[ImageItem]:
        """``name``'s validation slice of its training split, the first ``eval.images`` of it (0 = all): the last
        images of its training list, or all of a ``held_out`` split (converted from the slice only)."""
        spec = self.spec(name)
        if spec.val_split is None:
            raise UserError(f"dataset {name} has no validation split: the catalog lists no labelled training split "
                            f"of it (splits: {', '.join(spec.split_names)})")
        try:
            items = self.items(name, spec.val_split)
        except UserError as err:
            raise UserError(f"{err} (its validation images are held out of its {spec.val_split} split; "
                            "eval.validate=false scores test splits only)") from err
        val = items if spec.held_out else hold_out(items)[1]
        return _first(val, self.cfg.eval.images)

    def has_val(self, name: str) -> bool:
        """Whether ``name`` has validation images: a labelled training split of at least two images, or a converted
        ``held_out`` split. A ``held_out`` split that was never converted (a download without its training folder,
        or a conversion from before it existed) means no validation images, with a one-line warning, once."""
        spec = self.spec(name)
        if spec.val_split is None:
            return False
        if spec.held_out and not holds_split(spec, self.root(name), spec.held_out):
            if name not in self._without_val:
                self._without_val.add(name)
                warnings.warn(f"dataset {name}: no validation images: its held-out training images are not "
                              f"converted in {self.root(name)} (kdbench data prepare converts them where the raw "
                              "download has its training folder)", stacklevel=2)
            return False
        return bool(self.val_items(name))

    def stage_data(self, source: str) -> RealStageData:
        return RealStageData(self, source)

    def eval_loader(self, name: str) -> DataLoader:
        """``name``'s test images (:meth:`test_items`) under the dataset's test transform."""
        return self._loader(name, self.test_items(name))

    def val_loader(self, name: str) -> DataLoader:
        """``name``'s validation images (:meth:`val_items`), read and transformed as :meth:`eval_loader` reads."""
        return self._loader(name, self.val_items(name))

    def _loader(self, name: str, items: list[ImageItem]) -> DataLoader:
        spec = self.spec(name)
        dataset = EvalImages(items, read_image, partial(read_label, spec),
                             tuple(spec.test_scale) if spec.test_scale else None)
        return eval_loader(dataset, self.cfg.data.workers, self.device)


def _first(items: list[ImageItem], limit: int) -> list[ImageItem]:
    """The first ``limit`` items (0 = all)."""
    return items[:limit] if limit else items


class RealStageData:
    """The real counterpart of :class:`kdbench.data.loaders.StageData`: batches of each data kind of a source."""

    def __init__(self, data: RealData, source: str):
        self.data, self.source = data, source

    def size(self, kind: str) -> int:
        """How many images one epoch of ``kind`` holds (for epoch-based stage lengths)."""
        return len(self.data.train_items(self.source, kind))

    def fixed_inputs(self, kind: str) -> None:
        """Never a fixed set: every draw is a new random crop with photometric distortion."""
        return None

    def batches(self, kind: str, batch_size: int, seed: int) -> RealBatchStream:
        spec = self.data.spec(self.source)
        cfg = self.data.cfg
        labelled = kind == "source"
        dataset = TrainImages(self.data.train_items(self.source, kind), read_image, partial(read_label, spec),
                              cfg.data.image_size, labelled, stable_seed("augment", seed, kind),
                              scale_base=spec.train_scale_base)
        return RealBatchStream(dataset, batch_size, stable_seed("real", seed, kind), self.data.device,
                               cfg.data.workers, self.data.info)


def _refuse_unfinished(name: str, root: Path, cache: Path) -> None:
    """A conversion that ``kdbench data prepare`` started in ``root`` but never finished (killed mid-way) would
    silently give a subset of the data: refuse it by name."""
    from kdbench.data.real import prepare_io
    from kdbench.data.real.prepare import prepared_folder

    folder = prepared_folder(name, cache)
    marker = prepare_io.done_marker(folder)
    if root.resolve() == folder.resolve() and marker.parent.is_dir() and not marker.is_file():
        raise UserError(f"dataset {name}: the conversion in {folder} was interrupted; run `kdbench data prepare` "
                        f"again to finish it")
