"""Shared pieces of ``kdbench data prepare``: raw inputs (plain files or members of the official zip archives),
atomic writes, per-unit progress records, the done marker and Pillow's pixel limit.

A dataset is converted as a list of :class:`Unit` (an ISPRS tile, a Mapillary image). Every output file is written
to a temporary name in its own folder and then ``os.replace``-d, so a crash never leaves a truncated output; a unit's
record (its inputs' fingerprint and output list) is written after its outputs, and the dataset's done marker after
every unit, so a re-run redoes exactly the units that did not finish.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from kdbench.errors import UserError
from kdbench.results import atomic_write

#: suffix of in-progress files; loaders select by image suffix (.png/.jpg), so they never pick one up
TMP_SUFFIX = ".kdbench-tmp"
#: hidden folder inside a prepared dataset's folder holding the unit records and the done marker
STATE_DIR = ".kdbench-prepare"
#: Pillow's decompression-bomb guard is raised to this while preparing (a Potsdam tile is 6000² = 36 M pixels)
LARGE_IMAGE_PIXELS = 10_000 * 10_000


class MissingInputs(UserError):
    """The raw originals of a dataset are not where they were looked for (nothing has been written for it)."""


@dataclass(frozen=True)
class Source:
    """One raw input: a plain file (``member`` None) or a member of the zip archive ``path``.

    ``fingerprint`` identifies its content cheaply: name, size and modification second for a file; archive name,
    member, size and CRC-32 for a zip member.
    """

    path: Path
    member: str | None
    fingerprint: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.member).name if self.member else self.path.name

    def describe(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read_image(self) -> Image.Image:
        """Decodes the whole image (a zip member is read into memory, never extracted to disk)."""
        try:
            if self.member is None:
                with Image.open(self.path) as image:
                    image.load()
                    return image
            with zipfile.ZipFile(self.path) as archive:
                data = archive.read(self.member)
            image = Image.open(io.BytesIO(data))
            image.load()
            return image
        except (OSError, zipfile.BadZipFile, Image.DecompressionBombError) as exc:
            raise UserError(f"cannot read {self.describe()}: {exc}") from exc


def file_source(path: Path) -> Source:
    stat = path.stat()
    return Source(path, None, f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")


def list_folder(folder: Path, pattern: re.Pattern[str]) -> dict[str, Source]:
    """Files directly in ``folder`` whose name fully matches ``pattern``, keyed by its first group."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found[match.group(1)] = file_source(path)
    return found


def list_zip(archive: Path, pattern: re.Pattern[str], parent: str | None = None) -> dict[str, Source]:
    """Members of ``archive`` whose base name fully matches ``pattern`` (and, if given, whose folder is named
    ``parent``), keyed by the pattern's first group. Only the central directory is read."""
    if not archive.is_file():
        return {}
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read the zip archive {archive}: {exc}") from exc
    found = {}
    for info in sorted(infos, key=lambda i: i.filename):
        member = PurePosixPath(info.filename)
        match = pattern.fullmatch(member.name)
        if match and not info.is_dir() and (parent is None or member.parent.name == parent):
            found.setdefault(match.group(1), Source(
                archive, info.filename, f"{archive.name}!{info.filename}:{info.file_size}:{info.CRC:08x}"))
    return found


def digest(parts: Iterable[Any]) -> str:
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Unit:
    """One piece of work: ``sources`` converted together into the outputs of one ``split``."""

    key: str
    split: str
    sources: tuple[Source, ...]


@dataclass
class Plan:
    """What converting one dataset means: its units, where outputs go and the function converting a unit.

    ``convert(unit, writer)`` writes the unit's outputs through ``writer`` and returns its number of samples
    (image/label pairs). ``expected`` holds the per-split sample counts of the full official data, when known.
    """

    name: str
    raw_dir: Path
    out_dir: Path
    units: list[Unit]
    convert: Callable[[Unit, Writer], int]
    version: int
    params: dict[str, Any] = field(default_factory=dict)
    unit_kind: str = "files"
    expected: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)

    def sources_digest(self) -> str:
        return digest(sorted(s.fingerprint for u in self.units for s in u.sources))

    def unit_fingerprint(self, unit: Unit) -> str:
        return digest([self.version, self.params, unit.split, [s.fingerprint for s in unit.sources]])


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file in ``path``'s folder (named so :func:`remove_temporaries` finds it after a
    kill), then ``os.replace`` it onto ``path``; the temporary file never outlives a failure."""
    atomic_write(path, write, suffix=TMP_SUFFIX)


def save_atomic(image: Image.Image, path: Path, fmt: str, **params: Any) -> None:
    """Saves ``image`` to ``path`` atomically."""
    replace_atomically(path, lambda tmp: image.save(tmp, format=fmt, **params))


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, sort_keys=True)))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_temporaries(folder: Path) -> int:
    """Deletes the in-progress files a killed run left behind; returns how many."""
    stale = list(folder.rglob(f".*{TMP_SUFFIX}")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


class Writer:
    """Writes one unit's outputs under ``root`` (relative POSIX paths), remembering what it wrote."""

    def __init__(self, root: Path):
        self.root = root
        self.written: list[str] = []

    def save(self, rel: str, image: Image.Image, fmt: str, **params: Any) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(image, path, fmt, **params)
        self.written.append(rel)


class UnitRecords:
    """The per-unit records of a prepared folder: ``<out>/.kdbench-prepare/units/<key>.json``."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.folder = out_dir / STATE_DIR / "units"

    def load(self, key: str) -> dict[str, Any] | None:
        return read_json(self.folder / f"{key}.json")

    def finished(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """The record of ``key`` if it was converted from the same inputs and all its outputs still exist."""
        record = self.load(key)
        if not record or record.get("fingerprint") != fingerprint:
            return None
        outputs = record.get("outputs", [])
        return record if all((self.out_dir / rel).is_file() for rel in outputs) else None

    def save(self, key: str, fingerprint: str, outputs: list[str], samples: int) -> None:
        write_json_atomic(self.folder / f"{key}.json",
                          {"fingerprint": fingerprint, "outputs": outputs, "samples": samples})

    def keys(self) -> set[str]:
        return {p.stem for p in self.folder.glob("*.json")} if self.folder.is_dir() else set()

    def delete_outputs(self, key: str, keep: Iterable[str] = ()) -> int:
        """Deletes the outputs recorded for ``key`` that are not in ``keep``; returns how many."""
        stale = set((self.load(key) or {}).get("outputs", [])) - set(keep)
        for rel in stale:
            (self.out_dir / rel).unlink(missing_ok=True)
        return len(stale)

    def remove(self, key: str) -> int:
        """Deletes the outputs recorded for ``key`` and its record; returns the files deleted."""
        deleted = self.delete_outputs(key)
        (self.folder / f"{key}.json").unlink(missing_ok=True)
        return deleted


def done_marker(out_dir: Path) -> Path:
    return out_dir / STATE_DIR / "done.json"


@contextlib.contextmanager
def large_images_allowed() -> Iterator[None]:
    """Raises Pillow's decompression-bomb limit to :data:`LARGE_IMAGE_PIXELS` for the duration only."""
    old = Image.MAX_IMAGE_PIXELS
    if old is not None:
        Image.MAX_IMAGE_PIXELS = max(old, LARGE_IMAGE_PIXELS)
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old
