"""Procedural scene layouts: dense label maps plus the per-pixel geometry a renderer needs.

A layout is appearance-free. Domains (``kdbench.data.domains``) render the same layouts in different styles, so a
domain shift in the synthetic world is a shift of appearance (and, where a domain says so, of object scale),
never of labels.

Two scene kinds mirror the real benchmarks' worlds: ``urban`` street scenes seen from a car (as GTA5, Cityscapes,
BDD100K, Mapillary, ACDC) and ``aerial`` nadir views of a town (as ISPRS Potsdam and Vaihingen).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

URBAN_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car")
AERIAL_CLASSES = ("impervious surface", "building", "low vegetation", "tree", "car", "clutter")
SCENE_CLASSES = {"urban": URBAN_CLASSES, "aerial": AERIAL_CLASSES}


@dataclass
class Layout:
    """One scene: ``labels`` (H×W int64 class ids), ``depth`` (H×W, 0 near .. 1 far, used by fog) and
    ``instance`` (H×W int, one id per object so each object gets its own colour jitter)."""

    labels: np.ndarray
    depth: np.ndarray
    instance: np.ndarray


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return (ys + 0.5) / size, (xs + 0.5) / size


def _blob(ys: np.ndarray, xs: np.ndarray, cy: float, cx: float, ry: float, rx: float,
          rng: np.random.Generator, wobble: float = 0.25) -> np.ndarray:
    """An irregular ellipse: its radius wobbles with a few random harmonics of the polar angle."""
    dy, dx = (ys - cy) / ry, (xs - cx) / rx
    angle = np.arctan2(dy, dx)
    radius = np.ones_like(angle)
    for k in (2, 3, 5):
        radius += wobble / k * np.sin(k * angle + rng.uniform(0, 2 * np.pi))
    return dy**2 + dx**2 < radius**2


def urban_layout(size: int, rng: np.random.Generator, scale: float = 1.0) -> Layout:
    """A street scene: sky, buildings on the horizon, a perspective road with sidewalks, trees and cars.

    ``scale`` multiplies object sizes (cars, trees, building heights), as a camera at another height or
    focal length would.
    """
    ys, xs = _grid(size)
    labels = np.full((size, size), URBAN_CLASSES.index("sky"), dtype=np.int64)
    instance = np.zeros((size, size), dtype=np.int64)
    next_id = 1

    horizon = rng.uniform(0.36, 0.54) + rng.uniform(-0.05, 0.05) * (xs - 0.5)
    vanish_x = rng.uniform(0.3, 0.7)
    below = ys > horizon
    depth = np.where(below, np.clip((1 - ys) / np.maximum(1 - horizon, 1e-3), 0, 1), 1.0)

    # Buildings: a skyline of blocks standing behind the ground.
    x = rng.uniform(-0.1, 0.05)
    while x < 1.0:
        width = rng.uniform(0.08, 0.3)
        top = horizon - rng.uniform(0.08, 0.4) * min(scale, 1.6)
        block = (xs >= x) & (xs < x + width) & (ys > top) & (ys <= horizon + 0.04)
        if rng.random() < 0.85:
            labels[block] = URBAN_CLASSES.index("building")
            instance[block] = next_id
            next_id += 1
        x += width + rng.uniform(0.0, 0.06)

    # Ground: vegetation verge by default, then sidewalks and road as perspective wedges.
    labels[below] = URBAN_CLASSES.index("vegetation")
    t = np.clip((ys - horizon) / np.maximum(1 - horizon, 1e-3), 0, 1)  # 0 at horizon, 1 at the bottom row
    road_half = rng.uniform(0.28, 0.5) * t
    walk = rng.uniform(0.12, 0.22) * t
    offset = np.abs(xs - vanish_x)
    labels[below & (offset < road_half + walk)] = URBAN_CLASSES.index("sidewalk")
    labels[below & (offset < road_half)] = URBAN_CLASSES.index("road")
    instance[below] = 0

    # Trees on the verges, crowns overlapping buildings and sky.
    for _ in range(rng.integers(0, 4)):
        side = rng.choice([-1.0, 1.0])
        cx = float(np.clip(vanish_x + side * rng.uniform(0.3, 0.6), 0.02, 0.98))
        base = float(np.interp(cx, [0, 1], [horizon[0, 0], horizon[0, -1]])) + rng.uniform(0.0, 0.12)
        r = rng.uniform(0.06, 0.13) * scale
        crown = _blob(ys, xs, base - r, cx, r, r * rng.uniform(0.8, 1.3), rng)
        trunk = (np.abs(xs - cx) < 0.012 * scale + 0.01) & (ys > base - r) & (ys < base + 0.04)
        tree = crown | trunk
        labels[tree] = URBAN_CLASSES.index("vegetation")
        instance[tree] = next_id
        next_id += 1

    # Cars on the road, drawn far to near so near cars occlude far ones.
    lane_scale = float(road_half.max() / max(t.max(), 1e-3))
    for tt in sorted(rng.uniform(0.15, 0.95, size=rng.integers(0, 5))):
        row = float(np.interp(tt, [0, 1], [float(horizon.mean()), 1.0]))
        depth_scale = 0.4 + 0.6 * tt
        cx = vanish_x + rng.uniform(-0.85, 0.85) * tt * lane_scale
        w, h = 0.24 * depth_scale * scale, 0.11 * depth_scale * scale
        body = (np.abs(xs - cx) < w / 2) & (ys > row - h) & (ys < row)
        cabin = (np.abs(xs - cx) < w / 3) & (ys > row - 1.6 * h) & (ys <= row - h)
        car = body | cabin
        labels[car] = URBAN_CLASSES.index("car")
        instance[car] = next_id
        next_id += 1
    return Layout(labels=labels, depth=depth.astype(np.float32), instance=instance)


def aerial_layout(size: int, rng: np.random.Generator, scale: float = 1.0) -> Layout:
    """A nadir view of a town block: streets, roofs, lawns, trees, parked cars and clutter.

    ``scale`` multiplies object sizes, as another ground sampling distance or another town's building stock would.
    """
    ys, xs = _grid(size)
    labels = np.full((size, size), AERIAL_CLASSES.index("low vegetation"), dtype=np.int64)
    instance = np.zeros((size, size), dtype=np.int64)
    next_id = 1
    streets: list[tuple[str, float, float]] = []
    for axis in ("h", "v"):
        for _ in range(rng.integers(0, 2) + (axis == "h")):
            centre, half = rng.uniform(0.1, 0.9), rng.uniform(0.06, 0.11) * scale
            streets.append((axis, centre, half))
            coord = ys if axis == "h" else xs
            labels[np.abs(coord - centre) < half] = AERIAL_CLASSES.index("impervious surface")

    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.05, 0.95, size=2)
        hy, hx = rng.uniform(0.1, 0.24, size=2) * scale
        roof = (np.abs(ys - cy) < hy) & (np.abs(xs - cx) < hx)
        if rng.random() < 0.4:  # L-shaped roofs
            wing = (np.abs(ys - cy - hy) < hy * 0.6) & (np.abs(xs - cx + hx * 0.5) < hx * 0.5)
            roof |= wing
        labels[roof] = AERIAL_CLASSES.index("building")
        instance[roof] = next_id
        next_id += 1

    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, 1, size=2)
        for _ in range(rng.integers(1, 3)):
            r = rng.uniform(0.06, 0.11) * scale
            crown = _blob(ys, xs, cy + rng.normal(0, 0.06), cx + rng.normal(0, 0.06), r, r, rng)
            labels[crown] = AERIAL_CLASSES.index("tree")
            instance[crown] = next_id
            next_id += 1

    for axis, centre, half in streets:
        for _ in range(rng.integers(0, 3)):
            along = rng.uniform(0.05, 0.95)
            lane = centre + rng.choice([-0.5, 0.5]) * half
            long_, short = 0.18 * scale, 0.1 * scale
            if axis == "h":
                car = (np.abs(ys - lane) < short / 2) & (np.abs(xs - along) < long_ / 2)
            else:
                car = (np.abs(xs - lane) < short / 2) & (np.abs(ys - along) < long_ / 2)
            labels[car] = AERIAL_CLASSES.index("car")
            instance[car] = next_id
            next_id += 1

    for _ in range(rng.integers(0, 3)):
        cy, cx = rng.uniform(0, 1, size=2)
        r = rng.uniform(0.06, 0.1) * scale
        junk = _blob(ys, xs, cy, cx, r, r * rng.uniform(0.5, 2.0), rng, wobble=0.4)
        labels[junk] = AERIAL_CLASSES.index("clutter")
        instance[junk] = next_id
        next_id += 1
    depth = np.zeros((size, size), dtype=np.float32)
    return Layout(labels=labels, depth=depth, instance=instance)


LAYOUTS = {"urban": urban_layout, "aerial": aerial_layout}
