"""The synthetic world's named visual domains, the domain-randomised stream and the narrow proxy stream.

Each named domain mirrors one real dataset of the GKD paper's benchmarks (gkd.md §7) by its kind of appearance
shift: a game-like source and three real-camera targets (GTA5 -> Cityscapes, BDD100K, Mapillary), a clear-weather
city and four adverse conditions (Cityscapes -> ACDC night, snow, fog, rain), and an aerial RGB source with two
false-colour IRRG targets, one of them another town (Potsdam RGB -> Potsdam IRRG, Vaihingen IRRG).

Every target carries a colour or illumination shift: a prototype showed that texture- or weather-only shifts
leave source-trained models almost unharmed (shared/reference/synthetic_notes.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdbench.data.render import Style
from kdbench.data.scenes import AERIAL_CLASSES, SCENE_CLASSES, URBAN_CLASSES
from kdbench.errors import UserError, did_you_mean


@dataclass(frozen=True)
class Domain:
    """A named domain: which scenes, how they look, and the object scale of their layouts."""

    name: str
    scene: str
    style: Style
    scale: float = 1.0
    description: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        return SCENE_CLASSES[self.scene]


_GAME = {
    "road": (0.36, 0.34, 0.38, 0.30), "sidewalk": (0.66, 0.58, 0.50, 0.40),
    "building": (0.60, 0.44, 0.32, 0.35), "vegetation": (0.22, 0.58, 0.12, 0.80),
    "sky": (0.40, 0.68, 0.98, 0.30), "car": (0.80, 0.14, 0.12, 0.30),
}
_CITY = {
    "road": (0.42, 0.40, 0.45, 0.35), "sidewalk": (0.58, 0.55, 0.60, 0.40),
    "building": (0.44, 0.45, 0.43, 0.35), "vegetation": (0.33, 0.42, 0.20, 0.75),
    "sky": (0.78, 0.83, 0.88, 0.35), "car": (0.18, 0.22, 0.38, 0.30),
}
_STREET = {
    "road": (0.30, 0.28, 0.24, 0.30), "sidewalk": (0.78, 0.72, 0.55, 0.40),
    "building": (0.80, 0.62, 0.60, 0.35), "vegetation": (0.12, 0.36, 0.22, 0.80),
    "sky": (0.60, 0.74, 0.80, 0.30), "car": (0.85, 0.85, 0.82, 0.30),
}
_POTSDAM = {
    "impervious surface": (0.56, 0.55, 0.54, 0.35), "building": (0.62, 0.36, 0.30, 0.42),
    "low vegetation": (0.38, 0.52, 0.26, 0.72), "tree": (0.18, 0.34, 0.14, 0.88),
    "car": (0.28, 0.34, 0.62, 0.35), "clutter": (0.62, 0.50, 0.30, 0.45),
}
_VAIHINGEN = {
    "impervious surface": (0.48, 0.45, 0.40, 0.40), "building": (0.72, 0.52, 0.42, 0.30),
    "low vegetation": (0.45, 0.50, 0.28, 0.62), "tree": (0.25, 0.32, 0.16, 0.80),
    "car": (0.70, 0.70, 0.72, 0.40), "clutter": (0.40, 0.30, 0.25, 0.50),
}
_RGB, _IRRG = (0, 1, 2), (3, 0, 1)

DOMAINS: dict[str, Domain] = {d.name: d for d in [
    Domain("game", "urban", Style(_GAME, saturation=1.15, contrast=1.1, noise=0.005),
           description="saturated, sharp, clean game-engine look (as GTA5)"),
    Domain("city", "urban", Style(_CITY, saturation=0.85, blur=0.4, noise=0.015),
           description="overcast European city, muted colours (as Cityscapes)"),
    Domain("dashcam", "urban", Style(_CITY, tint=(1.15, 0.95, 0.70), contrast=0.75, gamma=1.35, brightness=0.8,
                                    blur=0.6, noise=0.04),
           description="warm colour cast, low contrast, sensor noise (as BDD100K)"),
    Domain("street", "urban", Style(_STREET, saturation=1.1, blur=0.3, noise=0.02), scale=1.35,
           description="other cities' palette, closer objects (as Mapillary Vistas)"),
    Domain("night", "urban", Style(_CITY, night=0.75, tint=(0.8, 0.85, 1.2), noise=0.04),
           description="dark, blue cast, lamp glow (as ACDC night)"),
    Domain("snow", "urban", Style(_CITY, snow=0.7, tint=(0.9, 0.95, 1.1), brightness=1.1, contrast=0.8),
           description="snow-covered ground, cold bright light (as ACDC snow)"),
    Domain("fog", "urban", Style(_CITY, fog=0.75, saturation=0.4, contrast=0.7, brightness=1.1, blur=0.6),
           description="depth-dependent veil, washed-out colours (as ACDC fog)"),
    Domain("rain", "urban", Style(_CITY, rain=0.7, brightness=0.75, tint=(0.85, 0.9, 1.05), saturation=0.6,
                                 blur=0.4),
           description="streaks, dark wet scene, grey-blue light (as ACDC rain)"),
    Domain("aerial-rgb", "aerial", Style(_POTSDAM, bands=_RGB, noise=0.01),
           description="true-colour orthophoto (as Potsdam RGB)"),
    Domain("aerial-irrg", "aerial", Style(_POTSDAM, bands=_IRRG, noise=0.01),
           description="same town in false colour, NIR-R-G (as Potsdam IRRG)"),
    Domain("aerial-irrg-b", "aerial", Style(_VAIHINGEN, bands=_IRRG, noise=0.02, blur=0.3), scale=0.75,
           description="another town, smaller buildings, false colour (as Vaihingen IRRG)"),
]}

# Natural-looking palettes of the narrow proxy distribution (the stand-in for ImageNet pretraining).
_PROXY = {"urban": {
    "road": (0.45, 0.45, 0.45, 0.30), "sidewalk": (0.70, 0.66, 0.62, 0.40),
    "building": (0.66, 0.58, 0.48, 0.35), "vegetation": (0.28, 0.50, 0.22, 0.80),
    "sky": (0.55, 0.72, 0.90, 0.30), "car": (0.50, 0.50, 0.56, 0.30),
}, "aerial": {
    "impervious surface": (0.50, 0.50, 0.50, 0.35), "building": (0.55, 0.45, 0.40, 0.40),
    "low vegetation": (0.35, 0.55, 0.25, 0.70), "tree": (0.22, 0.40, 0.18, 0.85),
    "car": (0.45, 0.45, 0.50, 0.35), "clutter": (0.55, 0.50, 0.40, 0.45),
}}


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise UserError(f"unknown domain {name!r};{did_you_mean(name, DOMAINS)} known domains: "
                        f"{', '.join(sorted(DOMAINS))}")
    return DOMAINS[name]


def _display(colour: np.ndarray, bands: tuple[int, int, int]) -> np.ndarray:
    return colour[..., list(bands)]


def sample_proxy_style(scene: str, rng: np.random.Generator) -> Style:
    """A draw from the narrow proxy distribution: one natural palette, mild lighting changes, no weather."""
    palette = {c: tuple(float(v) for v in np.clip(np.array(rgbn) + rng.normal(0, 0.04, 4), 0, 1))
               for c, rgbn in _PROXY[scene].items()}
    return Style(palette, instance_jitter=0.08, brightness=float(rng.uniform(0.85, 1.15)),
                 contrast=float(rng.uniform(0.9, 1.1)), noise=0.01)


def sample_randomised_style(scene: str, rng: np.random.Generator, exclude: list[Domain],
                            min_distance: float = 0.2) -> Style:
    """A draw from the broad domain-randomised distribution, kept away from the ``exclude`` domains.

    Per class, a displayed colour within ``min_distance`` (RGB L2) of that class's colour in any excluded domain is
    redrawn; weather never comes in an excluded domain's combination. So a model pretrained on this stream has
    seen colour variation in general, but not the held-out target looks.
    """
    classes = SCENE_CLASSES[scene]
    bands = tuple(int(b) for b in rng.choice(4, size=3, replace=False)) if rng.random() < 0.5 else _RGB
    excluded = [d for d in exclude if d.scene == scene]
    palette = {}
    for c in classes:
        for _ in range(100):
            colour = rng.uniform(0.03, 0.97, 4)
            shown = _display(colour, bands)
            if all(np.linalg.norm(shown - _display(np.array(d.style.palette[c]), d.style.bands)) >= min_distance
                   for d in excluded):
                break
        palette[c] = tuple(float(v) for v in colour)
    weather = {}
    if scene == "urban":
        for effect in ("fog", "night", "snow", "rain"):
            if rng.random() < 0.2:
                weather[effect] = float(rng.uniform(0.15, 0.5))
    return Style(
        palette, bands=bands, instance_jitter=float(rng.uniform(0.02, 0.12)),
        texture=float(rng.uniform(0.5, 1.6)), brightness=float(rng.uniform(0.6, 1.3)),
        contrast=float(rng.uniform(0.6, 1.3)), gamma=float(rng.uniform(0.6, 1.7)),
        saturation=float(rng.uniform(0.3, 1.5)), tint=tuple(float(t) for t in rng.uniform(0.75, 1.25, 3)),
        blur=float(rng.uniform(0, 0.8)), noise=float(rng.uniform(0, 0.05)), **weather,
    )


__all__ = ["DOMAINS", "Domain", "get_domain", "sample_proxy_style", "sample_randomised_style",
           "URBAN_CLASSES", "AERIAL_CLASSES"]
