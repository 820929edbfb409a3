"""Finding a dataset's files on disk and decoding them: roots, (image, label) pairs, images, labels in train ids.

Pairing follows mmseg's ``BaseSegDataset.load_data_list`` (datasets.md §0): only the image folder is scanned
(recursively, files ending in the image suffix), each label is the same relative path under the label folder with
the suffix swapped, the list is sorted by image path; UrbanSyn pairs by frame number (§8). Images decode as mmcv's
default ``LoadImageFromFile`` does (OpenCV, colour); labels as ``LoadAnnotations`` does (Pillow, unchanged: palette
PNGs by index), SYNTHIA's 16-bit labels with OpenCV (§4).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from kdbench.data.real.catalog import PREPARE_HINT, DatasetSpec, LabelFormat, Layout
from kdbench.data.real.labels import Encoding, colours_to_index, encoding
from kdbench.errors import UserError


@dataclass(frozen=True)
class Sample:
    """One image of a split, its label file (``None``: not found, or an image-only split) and a unique key (the
    image's path relative to the split's image folder, without the image suffix)."""

    image: Path
    label: Path | None
    key: str


@dataclass(frozen=True)
class RawLabel:
    """A label file's values before mapping: ``raw`` H×W integers in the file's own dtype (int32 for colour-coded
    files, −1 marking a colour outside the encoding's colour table), ``colours`` the decoded RGB of those files."""

    raw: np.ndarray
    encoding: Encoding
    colours: np.ndarray | None = None


def dataset_root(spec: DatasetSpec, data_root: Path, paths: Mapping[str, str] | None,
                 cache_dir: Path | None = None) -> Path:
    """The folder holding ``spec``'s files.

    ``paths`` (``data.paths``) overrides by dataset name (ACDC also by ``acdc``); a relative override is taken
    relative to ``data_root``. A prepared dataset (Potsdam, Vaihingen, Mapillary) is read from
    ``cache_dir/<folder>`` if converted there, else from an override or ``data_root/<folder>`` already holding
    the converted layout (its override otherwise names the raw files, which only ``data prepare`` reads). Among
    the alternatives, the first holding one of the dataset's image folders wins; when none does, the default
    location is returned (listing it then names what is missing)."""
    paths = paths or {}
    key = next((k for k in spec.path_keys if paths.get(k)), None)
    override = _resolve(paths[key], data_root) if key else None
    if override is not None and not spec.prepared:
        if not override.is_dir():
            raise UserError(f"data.paths.{key}: folder {override} does not exist")
        return override
    candidates: list[Path] = []
    if spec.prepared and cache_dir is not None:
        candidates.append(Path(cache_dir) / spec.folder)
    if override is not None:
        candidates.append(override)
    candidates += [Path(data_root) / folder for folder in spec.folders]
    for candidate in candidates:
        if holds_images(spec, candidate):
            return candidate
    return candidates[0]


def list_samples(spec: DatasetSpec, root: Path, split: str | None, missing_labels: str = "error") -> list[Sample]:
    """Every image of ``split`` under ``root`` with its label, sorted by image path. A missing image or label
    folder is a UserError naming it. Images of a labelled split whose label file is missing: ``"error"`` (a
    UserError naming the first and the count), ``"keep"`` (``label=None``, what ``data check`` reports) or
    ``"skip"`` (left out; :func:`split_samples` also returns them). Image-only splits (ACDC test) always have
    ``label=None``."""
    return split_samples(spec, root, split, missing_labels)[0]


def split_samples(spec: DatasetSpec, root: Path, split: str | None,
                  missing_labels: str = "error") -> tuple[list[Sample], list[Sample]]:
    """(the samples :func:`list_samples` returns, the images it left out for want of a label file: only with
    ``missing_labels="skip"``)."""
    if missing_labels not in ("error", "keep", "skip"):
        raise ValueError(f"missing_labels must be 'error', 'keep' or 'skip', not {missing_labels!r}")
    split_spec = spec.split(split)
    layout = find_layout(spec, root, split_spec.name)
    image_dir = root / layout.image_dir(split_spec.name)
    label_rel = layout.label_dir(split_spec.name)
    label_dir = root / label_rel if label_rel is not None else None
    if label_dir is not None and not label_dir.is_dir():
        raise UserError(f"dataset {spec.name}: label folder {label_dir} not found ({split_spec.name} labels)")
    samples = []
    for image in _scan(image_dir, layout):
        rel = image.relative_to(image_dir).as_posix()
        stem = rel[:-len(layout.image_suffix)]
        label = _find_label(layout, label_dir, stem) if label_dir is not None else None
        samples.append(Sample(image, label, stem))
    samples.sort(key=lambda s: str(s.image))
    if label_dir is None or missing_labels == "keep":
        return samples, []
    unlabelled = [s for s in samples if s.label is None]
    if unlabelled and missing_labels == "error":
        first = unlabelled[0]
        names = " or ".join(str(p.relative_to(root)) for p in _label_candidates(layout, label_dir, first.key))
        raise UserError(f"dataset {spec.name}: {len(unlabelled)} {split_spec.name} image(s) have no label file, "
                        f"e.g. {first.image} (expected {names}); kdbench data check lists them all, "
                        "--set data.missing_labels=skip leaves them out")
    return [s for s in samples if s.label is not None], unlabelled


def find_layout(spec: DatasetSpec, root: Path, split: str) -> Layout:
    """The first of the split's layouts whose image folder exists under ``root`` (UserError if none)."""
    layouts = spec.split(split).layouts
    for layout in layouts:
        if (root / layout.image_dir(split)).is_dir():
            return layout
    folder = root / layouts[0].image_dir(split)
    others = [layout.image_dir(split) for layout in layouts[1:]]
    also = f"; also looked for {', '.join(others)} there" if others else ""
    if spec.prepared:
        hint = f"; {PREPARE_HINT}"
    elif not root.is_dir():
        hint = (f"; the dataset folder {root} does not exist (expected {spec.folder} under the data root, or set "
                f"data.paths.{spec.name})")
    else:
        hint = ""
    note = f" ({spec.note})" if spec.note else ""
    raise UserError(f"dataset {spec.name}: folder {folder} not found ({split} images{also}){hint}{note}")


def read_image(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB from a PNG/JPEG/TIFF file (OpenCV as mmcv's default backend, EXIF orientation applied;
    Pillow for what OpenCV cannot decode). Unreadable -> UserError naming the file."""
    path = Path(path)
    image = None
    try:
        data = np.fromfile(path, dtype=np.uint8)
        if data.size:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except (OSError, cv2.error) as err:
        raise UserError(f"cannot read image {path}: {err}") from err
    if image is not None:
        return np.ascontiguousarray(image[..., ::-1])
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA", "L", "P", "LA", "PA", "CMYK", "YCbCr"):
                raise UserError(f"cannot read image {path}: unsupported mode {img.mode}")
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UserError(f"cannot read image {path}: not a readable image file ({err})") from err


def label_format(spec: DatasetSpec, path: Path) -> LabelFormat:
    """The label format a file name belongs to: the longest matching suffix (``_labelTrainIds.png`` before
    ``.png``). A file of none of the dataset's formats is a UserError."""
    name = Path(path).name
    matches = [f for f in spec.label_formats() if name.endswith(f.suffix) and name.startswith(f.prefix)]
    if not matches:
        raise UserError(f"{path} is not a label file of dataset {spec.name} (expected a name ending in "
                        f"{' or '.join(dict.fromkeys(f.suffix for f in spec.label_formats()))})")
    return max(matches, key=lambda f: (len(f.suffix), len(f.prefix)))


def read_raw_label(spec: DatasetSpec, path: Path | None) -> RawLabel:
    """A label file's raw values (before the LUT), decoded by its format's rule."""
    if path is None:
        raise UserError(f"dataset {spec.name}: an image has no label file")
    path = Path(path)
    fmt = label_format(spec, path)
    enc = encoding(fmt.encoding)
    if fmt.decoder == "opencv-red":
        return RawLabel(_read_red_channel(path), enc)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("RGB", "RGBA"):
                if enc.raw_colours is None:
                    raise UserError(f"label {path} is a colour image ({mode}); dataset {spec.name} expects class "
                                    "indices in a single-channel or palette PNG")
                rgb = np.asarray(img.convert("RGB"))
                return RawLabel(colours_to_index(rgb, enc.raw_colours), enc, rgb)
            if mode not in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
                raise UserError(f"label {path} has unsupported image mode {mode}")
            raw = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UserError(f"cannot read label {path}: not a readable image file ({err})") from err
    return RawLabel(raw, enc)


def read_label(spec: DatasetSpec, path: Path | None) -> np.ndarray:
    """H×W uint8 label in ``spec``'s train ids, 255 = ignore (values not in the table read as 255;
    ``reduce_zero_label`` applied where the dataset uses it)."""
    raw = read_raw_label(spec, path)
    return raw.encoding.to_train_ids(raw.raw)


def _read_red_channel(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (OSError, cv2.error) as err:
        raise UserError(f"cannot read label {path}: {err}") from err
    if array is None:
        raise UserError(f"cannot read label {path}: not a readable PNG")
    if array.ndim == 3:
        array = array[..., 2]  # OpenCV decodes BGR(A): index 2 is the R channel
    return array


def _resolve(value: str, data_root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(data_root) / path


def holds_images(spec: DatasetSpec, root: Path) -> bool:
    """Whether one of the image folders of one of ``spec``'s splits exists under ``root``."""
    return any(holds_split(spec, root, s.name) for s in spec.splits)


def holds_split(spec: DatasetSpec, root: Path, split: str) -> bool:
    """Whether one of the image folders of ``spec``'s ``split`` exists under ``root``."""
    return any((root / layout.image_dir(split)).is_dir() for layout in spec.split(split).layouts)


def _scan(folder: Path, layout: Layout) -> list[Path]:
    """Files under ``folder`` (recursively, following links) named like the layout's images; hidden files (``.*``,
    e.g. macOS ``._`` copies) skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.endswith(layout.image_suffix):
                continue
            if layout.pairing == "number" and not _number(name, layout):
                continue
            found.append(Path(dirpath) / name)
    return found


def _number(name: str, layout: Layout) -> str:
    """The frame number of an image named ``<image_prefix><digits><image_suffix>`` ('' if it is not one)."""
    if not name.startswith(layout.image_prefix):
        return ""
    digits = name[len(layout.image_prefix):-len(layout.image_suffix)]
    return digits if digits.isdigit() else ""


def _label_candidates(layout: Layout, label_dir: Path, stem: str) -> list[Path]:
    """Where the label of the image with key ``stem`` may lie, one path per label format, in preference order."""
    parent, _, base = stem.rpartition("/")
    folder = label_dir / parent if parent else label_dir
    if layout.pairing == "number":
        base = base[len(layout.image_prefix):]
    return [folder / f"{fmt.prefix}{base}{fmt.suffix}" for fmt in layout.label_formats]


def _find_label(layout: Layout, label_dir: Path, stem: str) -> Path | None:
    return next((path for path in _label_candidates(layout, label_dir, stem) if path.is_file()), None)
