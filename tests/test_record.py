"""The record schema (kdbench.record): every committed record loads through one upgrade, new records round-trip,
bad records are named, and reference rows are declared by role, so a plugin's reference row needs no report code."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.engine.evaluator import DomainScore
from kdbench.launch import score_record
from kdbench.record import SCHEMA_VERSION, TEACHER, Record, reference_of, upgrade
from kdbench.results import load_records
from kdbench.suite import Benchmark

ROOT = Path(__file__).parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "report" / "results"
COMMITTED = sorted(p for p in (ROOT / "results").iterdir() if p.is_dir()) if (ROOT / "results").is_dir() else []


@pytest.mark.parametrize("tree", COMMITTED, ids=[p.name for p in COMMITTED])
def test_every_committed_record_loads_as_the_current_schema(tree):
    raw = [json.loads(line) for done in sorted(tree.rglob("done"))
           for line in (done.parent / "records.jsonl").read_text().splitlines() if line.strip()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records, _ = load_records(tree)
    assert len(records) == len(raw) > 0
    for before, after in zip(raw, records, strict=True):
        assert after["schema"] == SCHEMA_VERSION
        assert {k: after[k] for k in before} == before, "an upgrade keeps every field it read"
        assert after["trial"] == before.get("trial", 0) and after["split"] == before.get("split", "test")
        expected = {"teacher": "teacher", "student-only": "baseline"}.get(before["method"], "")
        assert after["reference"] == expected


def test_schema_1_upgrade_fills_what_absence_meant():
    old = {"suite": "s", "benchmark": "b", "pair": "p", "method": "student-only", "seed": 1, "domain": "d",
           "role": "target", "miou": 12.5}
    record = Record.from_json(old)
    assert (record.trial, record.split, record.extra_params, record.reference) == (0, "test", None, "baseline")
    assert upgrade(old)["schema"] == SCHEMA_VERSION and "schema" not in old
    assert Record.from_json({**old, "method": TEACHER}).reference == "teacher"
    assert Record.from_json({**old, "method": "not-installed"}).reference == ""


def test_round_trip_keeps_unknown_fields_and_refuses_bad_records():
    record = Record(suite="s", benchmark="b", pair="p", method="kd", seed=0, domain="d", role="source", miou=1.0,
                    extra={"gpu_hours": 2.5})
    data = record.to_json()
    assert data["gpu_hours"] == 2.5 and data["schema"] == SCHEMA_VERSION
    assert Record.from_json(json.loads(json.dumps(data))) == record
    with pytest.raises(ValueError, match="lacks miou"):
        Record.from_json({k: v for k, v in data.items() if k != "miou"})
    with pytest.raises(ValueError, match="schema 99 is newer"):
        Record.from_json({**data, "schema": 99})
    with pytest.raises(ValueError, match="reference 'best'"):
        Record.from_json({**data, "reference": "best"})


def test_launcher_writes_the_current_schema_with_the_reference_role():
    bench = Benchmark("game2real", "game", ("city",))
    common = {"suite": "synth5", "benchmark": "game2real", "pair": "f2l", "method": "student-only",
              "reference": reference_of("student-only"), "schema": SCHEMA_VERSION, "seed": 0}
    row = score_record(common, bench, "city", "test", DomainScore(40.0, [40.0] * 6, 8, torch.zeros(6, 6)))
    assert row["schema"] == SCHEMA_VERSION and row["reference"] == "baseline" and row["role"] == "target"
    assert Record.from_json(row).to_json() == row
    old = {k: v for k, v in common.items() if k not in ("reference", "schema")}
    backfilled = score_record(old, bench, "game", "val", DomainScore(50.0, [50.0] * 6, 8, torch.zeros(6, 6)))
    assert backfilled["reference"] == "baseline"


def _add_reference_runs(results: Path) -> None:
    """Runs of a method that no registry knows, recorded as a reference row (schema 2), beside kd's."""
    for run in (results / "mini").glob("*/f2l/kd/*"):
        target = run.parent.parent / "frozen-s" / run.name
        shutil.copytree(run, target)
        lines = []
        for text in (target / "records.jsonl").read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:  # the fixture's deliberately unreadable line
                continue
        for line in lines:
            line.update(method="frozen-s", reference="reference", schema=SCHEMA_VERSION, hparams={},
                        miou=line["miou"] + 30.0)
        (target / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _row(text: str, method: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {method} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_a_reference_row_is_shown_never_ranked(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE, tmp_path / "results")
    _add_reference_runs(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "results", "--out", "rep", "--format", "md"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep" / "report.md").read_text()
    tables, rows = [], []
    for line in text.splitlines():
        if line.startswith("| method |"):
            rows = []
            tables.append(rows)
        elif line.startswith("| ") and not line.startswith("|---"):
            rows.append(line.split("|")[1].strip())
    main = next(t for t in tables if "student-only" in t)
    assert main[:3] == ["teacher", "student-only", "frozen-s"], "references head the table by role"
    frozen = _row(text, "frozen-s")
    assert not any(cell.startswith("**") for cell in frozen), "a reference row is never marked best"
    assert frozen[-3] == "–", "no Δ best baseline for a reference row"
    assert "frozen-s (" not in text and "over the best other method, frozen-s" not in text
    assert not any("frozen-s" in ln for ln in text.splitlines() if ln.startswith("Best mean OOD"))
