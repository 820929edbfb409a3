"""What the model cache folder (``$KDBENCH_CACHE``, default ``~/.cache/kdbench``) holds, and clearing it
(``kdbench cache list|clear``).

Three kinds of file live there, each named by a content key:

* ``teacher-outputs-<key>.pt``: a frozen teacher's outputs on a fixed input set (``train.teacher_cache``). Exact
  to recompute, and the largest: a sweep over every method fills 2.3 GB (docs/performance.md).
* ``teacher-<model>-<source>-<key>.pt``: a teacher's trained segmentation head (the teacher row's head).
* ``backbone-<model>-<key>.pt``: a pretrained synthetic backbone (synth5's foundation and local models).

The last two are pretraining products. Pretraining is not bit-reproducible across machines, so a cleared file
comes back as other weights, and runs made after that are not comparable with runs made before (the report
refuses to mix teacher digests); ``clear`` only removes them when asked by kind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kdbench.errors import UserError, did_you_mean

#: kind name -> file-name pattern, tried in this order (``teacher-outputs-`` also starts with ``teacher-``)
KINDS = {
    "teacher-outputs": re.compile(r"teacher-outputs-(?P<name>[0-9a-f]+)\.pt"),
    "teachers": re.compile(r"teacher-(?P<name>.+)-[0-9a-f]+\.pt"),
    "backbones": re.compile(r"backbone-(?P<name>.+)-[0-9a-f]+\.pt"),
}
#: what ``clear`` removes when no kind is named: the files that come back exactly
SAFE_KINDS = ("teacher-outputs",)
#: kinds whose files are pretraining products that another machine would not reproduce bit for bit
WEIGHT_KINDS = ("teachers", "backbones")


def cache_root(setting: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``setting`` (``pretrain.cache_dir``, ``--cache``) if given, else ``$KDBENCH_CACHE``, else
    ``~/.cache/kdbench``."""
    return Path(setting or os.environ.get("KDBENCH_CACHE") or Path.home() / ".cache" / "kdbench")


@dataclass(frozen=True)
class CacheFile:
    path: Path
    kind: str
    name: str
    size: int
    modified: float


def classify(filename: str) -> tuple[str, str] | None:
    """(kind, name) of a cache file name, or None for a file kdbench did not write."""
    for kind, pattern in KINDS.items():
        match = pattern.fullmatch(filename)
        if match:
            return kind, match["name"]
    return None


def cache_files(folder: Path) -> list[CacheFile]:
    """kdbench's files in ``folder``, by kind then name; other files (and temporary ones) are left out."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        parsed = classify(path.name) if path.is_file() else None
        if parsed:
            stat = path.stat()
            found.append(CacheFile(path, parsed[0], parsed[1], stat.st_size, stat.st_mtime))
    order = list(KINDS)
    return sorted(found, key=lambda f: (order.index(f.kind), f.name, f.path.name))


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """``--kind`` as a tuple of kinds: comma-separated names of :data:`KINDS`, or ``all``; None gives the safe kinds."""
    if text is None:
        return SAFE_KINDS
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(KINDS)
    unknown = [n for n in names if n not in KINDS]
    if unknown or not names:
        hint = did_you_mean(unknown[0], [*KINDS, "all"]) if unknown else ""
        raise UserError(f"unknown cache kind {', '.join(map(repr, unknown)) or repr(text)};{hint} "
                        f"valid: {', '.join(KINDS)} (comma-separated) or all")
    return tuple(dict.fromkeys(names))


def remove(files: Iterable[CacheFile]) -> tuple[int, int]:
    """Deletes ``files``; (how many, bytes freed). A file already gone is skipped."""
    count = freed = 0
    for f in files:
        try:
            f.path.unlink()
        except FileNotFoundError:
            continue
        count += 1
        freed += f.size
    return count, freed


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
