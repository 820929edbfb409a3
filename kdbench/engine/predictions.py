"""The predictions a run leaves for the report's qualitative grids: the first :data:`SAMPLES` images of every
domain's test split, the same images for every run of a sweep (a synthetic split is rendered from fixed seeds, a
real dataset's test list is its sorted file list, scored in that order).

Under ``<run dir>/predictions/<domain>/``: ``<i>.png``, the predicted class map of sample ``i`` (0-based) as an
indexed (palette, "P" mode) PNG, one class index per pixel, 255 where the label is ignored, in the label set's
palette (``kdbench.report.gallery.domain_palette``); the teacher's row also writes ``<i>-image.png`` (RGB) and
``<i>-label.png`` (the ground truth, indexed as the predictions), so the report needs no dataset. Maps are at
label resolution, shrunk (nearest; images by area) to at most :data:`MAX_SIDE` pixels on the long side; the
predictions of a domain, its image and its label have one size.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from kdbench.data.sources import is_real
from kdbench.results import atomic_write_bytes

if TYPE_CHECKING:
    from kdbench.launch import Workspace

PREDICTIONS = "predictions"
#: samples saved per domain
SAMPLES = 4
#: the longest side a saved map or image keeps
MAX_SIDE = 512

Palette = Sequence[tuple[int, int, int]]
#: a domain's first images (H×W×3 uint8 RGB) and labels (H×W uint8), for the teacher row
SampleReader = Callable[[str, int], tuple[Sequence[np.ndarray], Sequence[np.ndarray]]]


def prediction_file(run: Path, domain: str, index: int, kind: str = "") -> Path:
    """Where a run keeps sample ``index`` of ``domain``: its prediction (``kind`` ""), or, in the teacher's row, its
    ``"image"`` or ``"label"``."""
    return Path(run) / PREDICTIONS / domain / (f"{index}-{kind}.png" if kind else f"{index}.png")


def shown_size(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(height, width) shrunk to at most ``max_side`` on the long side, aspect kept; never enlarged."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink(array: np.ndarray, size: tuple[int, int], labels: bool) -> np.ndarray:
    """``array`` at ``size`` (height, width): nearest for label maps, area for images."""
    if array.shape[:2] == size:
        return np.ascontiguousarray(array)
    method = cv2.INTER_NEAREST if labels else cv2.INTER_AREA
    return cv2.resize(np.ascontiguousarray(array), (size[1], size[0]), interpolation=method)


def indexed_png(labels: np.ndarray, palette: Palette) -> bytes:
    """An H×W uint8 class map as an indexed PNG in ``palette`` (255 and unnamed indices in the gallery's ignore
    colour). The palette stops at the highest index used, so a map without 255 pays for no 256-colour table."""
    from kdbench.report.gallery import colourise

    labels = np.asarray(labels, dtype=np.uint8)
    lut = colourise(np.arange(int(labels.max(initial=0)) + 1, dtype=np.uint8), palette)
    image = Image.fromarray(labels, mode="P")
    image.putpalette(lut.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def rgb_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def read_map(path: Path) -> np.ndarray:
    """A saved class map's indices (H×W uint8), not its palette colours."""
    with Image.open(path) as image:
        if image.mode != "P":
            raise ValueError(f"{path}: a class map must be an indexed PNG, found mode {image.mode}")
        return np.asarray(image, dtype=np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    """A saved sample image (H×W×3 uint8 RGB)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def save_predictions(run: Path, predicted: Mapping[str, Sequence[np.ndarray]],
                     samples: SampleReader | None = None) -> list[Path]:
    """Write each domain's kept predictions (:attr:`kdbench.engine.evaluator.DomainScore.predictions`) into the
    run directory ``run``; with ``samples`` (the teacher's row) also each sample's image and label. Returns the
    files written."""
    from kdbench.report.gallery import domain_palette

    written = []
    for domain, maps in predicted.items():
        colours = domain_palette(domain)
        images, labels = samples(domain, len(maps)) if samples is not None else ((), ())
        for index, prediction in enumerate(maps):
            size = shown_size(*prediction.shape[:2])
            files = {"": indexed_png(shrink(prediction, size, labels=True), colours)}
            if index < len(images):
                files["image"] = rgb_png(shrink(images[index], size, labels=False))
                files["label"] = indexed_png(shrink(labels[index], size, labels=True), colours)
            for kind, data in files.items():
                path = prediction_file(run, domain, index, kind)
                atomic_write_bytes(path, data)
                written.append(path)
    return written


def test_samples(ws: Workspace) -> SampleReader:
    """The first images and labels of a domain's test split as ``ws`` scores them: the rendered synthetic split,
    or a real dataset's test list (:meth:`kdbench.data.real.access.RealData.test_items`) read from its files."""
    def read(domain: str, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if is_real(domain):
            from kdbench.data.real.files import read_image, read_label

            spec = ws.real.spec(domain)
            items = ws.real.test_items(domain)[:count]
            return [read_image(i.image) for i in items], [read_label(spec, i.label) for i in items]
        split = ws.split(domain, "test")
        return list(split.images[:count].permute(0, 2, 3, 1).numpy()), list(split.labels[:count].numpy())

    return read
