"""An out-of-tree method is found through the ``kdbench.methods`` entry-point group, as an installed one is.

The plugin is a module plus a ``*.dist-info`` folder on ``PYTHONPATH``: exactly what ``importlib.metadata``
sees for a package installed by pip, without installing anything into the test environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_SOURCE = '''\
from kdbench.method import Method


class ToyPlugin(Method):
    """Feature-free toy plugin: student-only loss times a weight.

    Used by kdbench's tests to prove that third-party methods are discovered through entry points.
    """

    defaults = {"weight": 1.0}

    def loss(self, stage, batch, student_out, teacher_out):
        return {"task": self.hp["weight"] * self.task_loss(student_out, batch)}
'''
DESCRIPTION = "Feature-free toy plugin: student-only loss times a weight."
GAME2REAL = {"game": "source", "city": "target", "dashcam": "target", "street": "target"}


def install_fake_distribution(site: Path, dist: str, entry_points: dict[str, str],
                              modules: dict[str, str] | None = None) -> Path:
    """Write ``modules`` and a ``<dist>-0.1.dist-info`` declaring ``kdbench.methods`` entry points."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[kdbench.methods]\n{lines}")
    return site


def kdbench(site: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m kdbench ARGS`` with ``site`` on PYTHONPATH, offline, with its own model cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KDBENCH_CACHE": str(tmp / "cache"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "kdbench", *args], capture_output=True, text=True, env=env,
                          cwd=tmp, timeout=600)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(site folder holding the plugin, a scratch folder for outputs and the cache)."""
    tmp = tmp_path_factory.mktemp("plugin")
    site = install_fake_distribution(tmp / "site", "my-kd-plugin", {"my-plugin": "my_kd_plugin:ToyPlugin"},
                                     {"my_kd_plugin": textwrap.dedent(PLUGIN_SOURCE)})
    return site, tmp


def test_plugin_is_not_visible_in_process() -> None:
    """Guard: the plugin really comes from the subprocess's PYTHONPATH, not from this environment."""
    from kdbench.method import METHODS

    assert "my-plugin" not in METHODS.names()


def test_list_methods_shows_plugin(plugin: tuple[Path, Path]) -> None:
    site, tmp = plugin
    proc = kdbench(site, tmp, "list", "methods")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(None, 1) for line in proc.stdout.splitlines() if line.strip()]
    lines = {row[0]: row[1] if len(row) > 1 else "" for row in rows}
    assert lines.get("my-plugin") == DESCRIPTION
    assert {"student-only", "kd", "teacher"} <= set(lines), "built-ins are still listed next to the plugin"


def test_run_plugin_with_hyperparameter(plugin: tuple[Path, Path]) -> None:
    site, tmp = plugin
    out = tmp / "out"
    proc = kdbench(site, tmp, "run", "--suite", "smoke", "--methods", "my-plugin",
                   "--benchmarks", "game2real", "--pairs", "tiny-f2f", "--out", str(out),
                   "--set", "method.my-plugin.weight=2.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr

    files = sorted((out / "smoke" / "game2real" / "tiny-f2f" / "my-plugin").glob("*/records.jsonl"))
    assert len(files) == 1, files
    records = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
    assert {r["domain"]: r["role"] for r in records} == GAME2REAL
    assert len(records) == 2 * len(GAME2REAL), "one record per domain and split"
    assert sorted(r["split"] for r in records) == ["test"] * len(GAME2REAL) + ["val"] * len(GAME2REAL)
    for record in records:
        assert record["method"] == "my-plugin"
        assert record["hparams"] == {"weight": 2.0}
        assert record["benchmark"] == "game2real" and record["pair"] == "tiny-f2f"
        assert 0.0 <= record["miou"] <= 100.0
    assert (files[0].parent / "done").is_file()
    assert (files[0].parent / "metrics.jsonl").is_file(), "the plugin was trained, not just evaluated"
    assert (out / "report.md").is_file() and "my-plugin" in (out / "report.md").read_text()


def test_broken_plugin_selected_gives_one_line_error(tmp_path: Path) -> None:
    site = install_fake_distribution(tmp_path / "site", "broken-kd-plugin",
                                     {"broken-plugin": "no_such_kd_plugin_module:Missing"})
    out = tmp_path / "out"
    proc = kdbench(site, tmp_path, "run", "--suite", "smoke", "--methods", "broken-plugin", "--out", str(out))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:")
    assert "broken-plugin" in lines[0]
    assert not list(tmp_path.rglob("records.jsonl"))
    assert not (tmp_path / "cache").exists()


def test_broken_plugin_does_not_hide_the_other_methods(tmp_path: Path) -> None:
    site = install_fake_distribution(tmp_path / "site", "broken-kd-plugin",
                                     {"broken-plugin": "no_such_kd_plugin_module:Missing"})
    proc = kdbench(site, tmp_path, "list", "methods")
    assert "Traceback" not in proc.stdout + proc.stderr
    names = {line.split(None, 1)[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"student-only", "kd", "broken-plugin"} <= names
