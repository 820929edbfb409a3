"""Writers of tiny RAW originals for the ``data prepare`` tests, in the layouts of the official downloads
(datasets.md §6, §9, §10, §15): ISPRS Potsdam/Vaihingen colour-coded TIFF tiles (folders or the official zips,
with decoys) and Mapillary Vistas v1.2 validation and training data in both packagings (P-mode labels over all 66
ids plus an out-of-range index, and a 66-entry ``config.json``).

The writers return the raw arrays they wrote; the expected converted outputs are for the tests to compute.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

#: the seven ISPRS label colours (datasets.md §9) followed by two colours outside the table
ISPRS_PAINT = ((0, 0, 0), (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0),
               (255, 0, 255), (254, 255, 255))

#: Mapillary Vistas v1.2 readable class names, ids 0..65 (datasets.md §6)
MAPILLARY_READABLE = (
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane", "Crosswalk - Plain",
    "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road", "Service Lane", "Sidewalk", "Bridge", "Building",
    "Tunnel", "Person", "Bicyclist", "Motorcyclist", "Other Rider", "Lane Marking - Crosswalk",
    "Lane Marking - General", "Mountain", "Sand", "Sky", "Snow", "Terrain", "Vegetation", "Water", "Banner", "Bench",
    "Bike Rack", "Billboard", "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box", "Mailbox", "Manhole",
    "Phone Booth", "Pothole", "Street Light", "Pole", "Traffic Sign Frame", "Utility Pole", "Traffic Light",
    "Traffic Sign (Back)", "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat", "Bus", "Car", "Caravan",
    "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck", "Wheeled Slow", "Car Mount", "Ego Vehicle",
    "Unlabeled",
)
#: their colours (mmseg ``MapillaryDataset_v1`` palette = config.json colours)
MAPILLARY_COLOURS = (
    (165, 42, 42), (0, 192, 0), (196, 196, 196), (190, 153, 153), (180, 165, 180), (90, 120, 150), (102, 102, 156),
    (128, 64, 255), (140, 140, 200), (170, 170, 170), (250, 170, 160), (96, 96, 96), (230, 150, 140), (128, 64, 128),
    (110, 110, 110), (244, 35, 232), (150, 100, 100), (70, 70, 70), (150, 120, 90), (220, 20, 60), (255, 0, 0),
    (255, 0, 100), (255, 0, 200), (200, 128, 128), (255, 255, 255), (64, 170, 64), (230, 160, 50), (70, 130, 180),
    (190, 255, 255), (152, 251, 152), (107, 142, 35), (0, 170, 30), (255, 255, 128), (250, 0, 30), (100, 140, 180),
    (220, 220, 220), (220, 128, 128), (222, 40, 40), (100, 170, 30), (40, 40, 40), (33, 33, 33), (100, 128, 160),
    (142, 0, 0), (70, 100, 150), (210, 170, 100), (153, 153, 153), (128, 128, 128), (0, 0, 80), (250, 170, 30),
    (192, 192, 192), (220, 220, 0), (140, 140, 20), (119, 11, 32), (150, 0, 255), (0, 60, 100), (0, 0, 142),
    (0, 0, 90), (0, 0, 230), (0, 80, 100), (128, 64, 64), (0, 0, 110), (0, 0, 70), (0, 0, 192), (32, 32, 32),
    (120, 10, 10), (0, 0, 0),
)
MAPILLARY_IDS = ("__CRyFzoDOXn6unQ6a3DnQ", "-0qHgJ1pYVHzoVzu4RgoVQ")
#: twelve training ids (22 characters, leading characters whose sorted order is neither the written order nor a
#: case-insensitive one): the held-out slice of twelve is the last two in sorted order
MAPILLARY_TRAINING_IDS = tuple(f"{lead}train{i:02d}{'q' * 14}" for i, lead in enumerate("zaZ_b-YcAyBd"))
#: a palette index no v1.2 class uses (the converter must map it to ignore)
MAPILLARY_OUT_OF_RANGE = 200


def _tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


def _put(root: Path, files: dict[str, bytes], archive: str | None) -> None:
    """Writes ``files`` (relative POSIX path -> bytes) under ``root``, or into the zip ``root/archive``."""
    root.mkdir(parents=True, exist_ok=True)
    if archive is None:
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return
    with zipfile.ZipFile(root / archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)


def isprs_label(width: int, height: int, off_table: bool = True) -> np.ndarray:
    """An RGB colour label of 8-pixel blocks cycling through :data:`ISPRS_PAINT` (without its two off-table colours
    when ``off_table`` is false, as a correct download), so every 32² patch holds every colour."""
    paint = ISPRS_PAINT if off_table else ISPRS_PAINT[:7]
    y, x = np.mgrid[0:height, 0:width]
    return np.asarray(paint, np.uint8)[(x // 8 + 2 * (y // 8)) % len(paint)]


def write_potsdam(root: Path, tiles: tuple[str, ...] = ("2_10", "2_13"), size: int = 64, zipped: bool = False,
                  seed: int = 0, off_table: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Raw Potsdam under ``root`` (the ``potsdam`` folder): per tile ``top_potsdam_<t>_RGB.tif``,
    ``_IRRG.tif`` and ``_label_noBoundary.tif`` in ``2_Ortho_RGB/``, ``3_Ortho_IRRG/``, ``5_Labels_all_noBoundary/``
    or, with ``zipped``, in the three official zips (each holding its folder, plus a ``.tfw`` world file as the
    real ones do). ``off_table``: labels hold two colours outside the ISPRS table (false: a correct download).
    Returns ``{tile: {"RGB", "IRRG", "label"}}`` arrays."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    groups: dict[str, dict[str, bytes]] = {"2_Ortho_RGB": {}, "3_Ortho_IRRG": {}, "5_Labels_all_noBoundary": {}}
    for tile in tiles:
        arrays = {"RGB": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                  "IRRG": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                  "label": isprs_label(size, size, off_table)}
        out[tile] = arrays
        groups["2_Ortho_RGB"][f"2_Ortho_RGB/top_potsdam_{tile}_RGB.tif"] = _tiff(arrays["RGB"])
        groups["2_Ortho_RGB"][f"2_Ortho_RGB/top_potsdam_{tile}_RGB.tfw"] = b"0.05\n0\n0\n-0.05\n0\n0\n"
        groups["3_Ortho_IRRG"][f"3_Ortho_IRRG/top_potsdam_{tile}_IRRG.tif"] = _tiff(arrays["IRRG"])
        groups["5_Labels_all_noBoundary"][f"5_Labels_all_noBoundary/top_potsdam_{tile}_label_noBoundary.tif"] = (
            _tiff(arrays["label"]))
    for stem, files in groups.items():
        _put(root, files, f"{stem}.zip" if zipped else None)
    return out


def write_vaihingen(root: Path, areas: dict[str, tuple[int, int]] | None = None, zipped: bool = False,
                    seed: int = 1, off_table: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Raw Vaihingen under ``root`` (the ``vaihingen`` folder): ``top/top_mosaic_09cm_<area>.tif`` (IRRG) and
    ``top_mosaic_09cm_<area>_noBoundary.tif``, plus an area9 ground truth without image (mmseg drops it). Default
    areas: area1 (train) 70×50, a size 32 does not divide, and area2 (val) 64×64. With ``zipped`` the files go into
    the two official zips, the image zip also holding ``gts_for_participants/`` colour labels with the same base
    names as the images (decoys). ``off_table`` as for :func:`write_potsdam`. Returns ``{area: {"image",
    "label"}}``."""
    areas = areas if areas is not None else {"area1": (70, 50), "area2": (64, 64)}
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    images: dict[str, bytes] = {}
    labels: dict[str, bytes] = {"top_mosaic_09cm_area9_noBoundary.tif": _tiff(isprs_label(40, 40, off_table))}
    for area, (width, height) in areas.items():
        arrays = {"image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                  "label": isprs_label(width, height, off_table)}
        out[area] = arrays
        images[f"top/top_mosaic_09cm_{area}.tif"] = _tiff(arrays["image"])
        labels[f"top_mosaic_09cm_{area}_noBoundary.tif"] = _tiff(arrays["label"])
        if zipped:
            images[f"gts_for_participants/top_mosaic_09cm_{area}.tif"] = _tiff(np.roll(arrays["label"], 3, axis=1))
    _put(root, images, "ISPRS_semantic_labeling_Vaihingen.zip" if zipped else None)
    _put(root, labels, "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip" if zipped else None)
    return out


def mapillary_ids_map(width: int, height: int, shift: int = 0, out_of_range: bool = True) -> np.ndarray:
    """Class ids 0..65 and (with ``out_of_range``) :data:`MAPILLARY_OUT_OF_RANGE` painted in 2×2 blocks (so any
    nearest halving keeps them), every one of them at least once in a 64×48 image."""
    y, x = np.mgrid[0:height, 0:width]
    values = np.array([*range(66), *([MAPILLARY_OUT_OF_RANGE] if out_of_range else [])], np.uint8)
    return values[(x // 2 + (width // 2) * (y // 2) + shift) % len(values)]


def _p_mode_png(ids: np.ndarray) -> bytes:
    image = Image.fromarray(ids, mode="P")
    palette = [c for colour in MAPILLARY_COLOURS for c in colour]
    image.putpalette(palette + [0] * (768 - len(palette)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def mapillary_config(readable: tuple[str, ...] = MAPILLARY_READABLE) -> dict:
    """A v1.2 ``config.json`` body: ``labels`` with ``name``, ``readable``, ``color``, ``instances``, ``evaluate``."""
    return {"labels": [{"name": "class--" + name.lower().replace(" ", "-"), "readable": name,
                        "color": list(MAPILLARY_COLOURS[i]) if i < len(MAPILLARY_COLOURS) else [0, 0, 0],
                        "instances": False, "evaluate": name != "Unlabeled"} for i, name in enumerate(readable)],
            "version": "1.2", "mapping": "public", "folder_structure": "{split}/{content}/{key:.{22}}.{ext}"}


def write_mapillary(root: Path, layout: str = "v1.2", ids: tuple[str, ...] = MAPILLARY_IDS,
                    size: tuple[int, int] = (64, 48), readable: tuple[str, ...] | None = MAPILLARY_READABLE,
                    out_of_range: bool = True,
                    training: tuple[str, ...] | None = MAPILLARY_TRAINING_IDS) -> dict[str, dict[str, np.ndarray]]:
    """Raw Mapillary Vistas under ``root`` (the ``mapillary`` folder).

    ``layout`` "v1.2": standalone ``{training,validation}/{images,labels}`` + ``config.json``; "v2.0": the v2.0
    package, ``{split}/images``, ``{split}/v1.2/labels``, ``{split}/v2.0/labels`` (a decoy) + ``config_v1.2.json``
    and ``config_v2.0.json``. Validation images are smooth gradients of ``size`` (W, H); labels are P-mode PNGs of
    :func:`mapillary_ids_map`, shifted per image (``out_of_range`` false: ids 0..65 only, a correct download). The
    ``training`` images are written by :func:`write_mapillary_training` (``None``: no training folder, a download
    of the validation split only). ``readable`` None writes no config. Returns ``{id: {"image", "ids"}}`` of the
    validation split.
    """
    files: dict[str, bytes] = {}
    out = _mapillary_split(files, "validation", layout, ids, size, out_of_range, 60, 100, 5)
    if readable is not None:
        config_name = {"v1.2": "config.json", "v2.0": "config_v1.2.json"}[layout]
        files[config_name] = json.dumps(mapillary_config(readable)).encode()
    if layout == "v2.0":
        files["config_v2.0.json"] = json.dumps(mapillary_config(tuple(f"v2 class {k}" for k in range(124)))).encode()
    _put(root, files, None)
    if training is not None:
        write_mapillary_training(root, layout, training, size, out_of_range)
    return out


def write_mapillary_training(root: Path, layout: str = "v1.2", ids: tuple[str, ...] = MAPILLARY_TRAINING_IDS,
                             size: tuple[int, int] = (64, 48),
                             out_of_range: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Mapillary's training split under ``root`` in the packaging of ``layout`` (as :func:`write_mapillary`), one
    image per id, each different from every validation image. Returns ``{id: {"image", "ids"}}``."""
    files: dict[str, bytes] = {}
    out = _mapillary_split(files, "training", layout, ids, size, out_of_range, 20, 19, 7)
    _put(root, files, None)
    return out


def _mapillary_split(files: dict[str, bytes], split: str, layout: str, ids: tuple[str, ...], size: tuple[int, int],
                     out_of_range: bool, blue: int, step: int, shift: int) -> dict[str, dict[str, np.ndarray]]:
    """Adds one split's images and labels to ``files``: image ``n`` has blue ``blue + step * n`` (mod 256) and its
    label the ids shifted by ``shift * n``."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    labels_dir = {"v1.2": "labels", "v2.0": "v1.2/labels"}[layout]
    out: dict[str, dict[str, np.ndarray]] = {}
    for n, key in enumerate(ids):
        image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, (blue + step * n) % 256)],
                         -1).astype(np.uint8)
        ids_map = mapillary_ids_map(width, height, shift=shift * n, out_of_range=out_of_range)
        out[key] = {"image": image, "ids": ids_map}
        files[f"{split}/images/{key}.jpg"] = _jpeg(image)
        files[f"{split}/{labels_dir}/{key}.png"] = _p_mode_png(ids_map)
        if layout == "v2.0":
            files[f"{split}/v2.0/labels/{key}.png"] = _p_mode_png(np.full_like(ids_map, 123))
    return out
