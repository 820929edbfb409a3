"""Run directories and result records.

One directory per run holds ``config.yaml`` (the resolved run config), ``metrics.jsonl`` (the training log: one
line per logged step with every named loss term), ``records.jsonl`` (one JSON record per evaluated domain) and a
``done`` marker written last. A run directory without ``done`` is unfinished: it is resumed from its ``resume.pt``
where there is one, else redone from the start; one with a ``failed`` file holds the reason it failed. Every file
is written atomically (temporary file, rename); ``metrics.jsonl`` is appended a whole line at a time.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

DONE, FAILED, RECORDS, METRICS, CONFIG = "done", "failed", "records.jsonl", "metrics.jsonl", "config.yaml"
RESUME = "resume.pt"  # an interrupted run's training state (kdbench.engine.resume)


#: what a run directory holds; ``.<one of these>.<random>.tmp`` is a temporary file of kdbench's own
_OWN_FILES = re.compile(r"(done|failed|records\.jsonl|metrics\.jsonl|config\.yaml|resume\.pt|stage-[\w.-]+\.pt)")
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def _is_own_temporary(name: str) -> bool:
    match = _TEMPORARY.fullmatch(name)
    return bool(match and _OWN_FILES.fullmatch(match["name"]))


def default_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under this process's umask (``mkstemp`` makes
    its files 0600, unreadable to a shared group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (``.<name>.<random><suffix>``), then rename it over
    ``path`` with the mode a plain write would give it: a reader sees the old file or the new one, never half of
    one, and no temporary file outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def done(self) -> bool:
        return (self.path / DONE).is_file()

    def start(self, config: dict[str, Any]) -> None:
        """Begin (or begin again) a run: stale outputs of an unfinished attempt are removed first."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temporaries()
        for name in (RECORDS, METRICS, FAILED, RESUME):
            (self.path / name).unlink(missing_ok=True)
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files an attempt killed mid-write left here (:func:`atomic_write_text`'s and
        ``atomic_save``'s ``.<file>.<random>.tmp``), only those of kdbench's own file names; return them. Called when
        a run starts or resumes, when no write of this run is in flight."""
        stale = [p for p in self.path.iterdir() if p.is_file() and _is_own_temporary(p.name)] \
            if self.path.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def metrics_count(self) -> int:
        path = self.path / METRICS
        return len(path.read_text().splitlines()) if path.is_file() else 0

    def truncate_metrics(self, lines: int) -> None:
        """Keep the first ``lines`` log lines: those logged after the state a resumed run goes on from are logged
        again by it (a line cut short by a crash goes too)."""
        path = self.path / METRICS
        if path.is_file():
            kept = path.read_text().splitlines()[:lines]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def log_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def finish(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / RECORDS, "".join(json.dumps(r) + "\n" for r in records))
        atomic_write_text(self.path / DONE, "")
        (self.path / RESUME).unlink(missing_ok=True)

    def records(self) -> list[dict[str, Any]]:
        """The run's records (none before it is finished)."""
        path = self.path / RECORDS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def add_records(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` to a finished run's records, in one atomic write."""
        kept = (self.path / RECORDS).read_text() if (self.path / RECORDS).is_file() else ""
        atomic_write_text(self.path / RECORDS, kept + "".join(json.dumps(r) + "\n" for r in rows))

    def fail(self, reason: str) -> None:
        atomic_write_text(self.path / FAILED, reason.strip() + "\n")
        (self.path / RESUME).unlink(missing_ok=True)


def load_records(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """All records of finished runs under ``root``, each brought to the current schema
    (:meth:`kdbench.record.Record.from_json`) and given its ``run_path``, and the failed runs (path and reason).

    Unreadable record lines, and records that are not a valid record of any schema, are skipped with a warning
    naming the file and line.
    """
    from kdbench.record import Record

    records, failures = [], []
    for marker in sorted(Path(root).rglob(DONE)):
        path = marker.parent / RECORDS
        if not path.is_file():
            warnings.warn(f"{marker.parent}: marked done but has no {RECORDS}; skipped", stacklevel=2)
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("not an object")
            except ValueError:
                warnings.warn(f"{path}:{number}: unreadable record line skipped", stacklevel=2)
                continue
            try:
                record = Record.from_json(raw).to_json()
            except (TypeError, ValueError) as exc:
                warnings.warn(f"{path}:{number}: not a kdbench record ({exc}); skipped", stacklevel=2)
                continue
            record["run_path"] = str(marker.parent)
            records.append(record)
    for marker in sorted(Path(root).rglob(FAILED)):
        failures.append({"run": str(marker.parent), "reason": marker.read_text().strip()})
    return records, failures


@functools.cache
def versions() -> dict[str, str]:
    import timm
    import torch

    from kdbench import __version__

    return {"kdbench": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": sys.version.split()[0]}


@functools.cache
def git_commit() -> str | None:
    """The commit of the kdbench checkout this code runs from, when it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")
