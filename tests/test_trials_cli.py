"""Hyper-parameter trials, validation splits and model selection used as a researcher would (issue 15): `kdbench
run --trials`, then `kdbench report --select`, on the smoke suite."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kdbench.cli import cli
from kdbench.config import Config
from kdbench.engine.runtime import resolve_runtime
from kdbench.launch import SYNTHETIC_SPLITS, Workspace
from kdbench.method import METHODS
from kdbench.search import LogUniform
from kdbench.suite import load_suite
from kdbench_methods.kd import LogitKD


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def records(root: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(root.rglob("records.jsonl")) for line in p.read_text().splitlines()]


SWEEP = ("run", "--suite", "smoke", "--benchmarks", "game2real", "--methods", "student-only,kd,cwd", "--seeds", "0,1")


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trials") / "out"
    result = invoke(*SWEEP, "--trials", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_trials_are_ordinary_runs_with_val_and_test_rows(searched):
    recs = records(searched)
    students = [r for r in recs if r["method"] not in ("teacher", "student-only")]
    # 2 pairs × 2 methods × 3 trials × 2 seeds runs, each scoring 4 domains on val and on test
    assert len({r["run_dir"] for r in students}) == 2 * 2 * 3 * 2
    assert len(students) == 24 * 4 * 2
    # student-only has no search space: one trial, its defaults
    assert {r["trial"] for r in recs if r["method"] == "student-only"} == {0}
    assert {r["split"] for r in recs} == {"val", "test"}
    kd = [r for r in students if r["method"] == "kd" and r["pair"] == "tiny-f2l" and r["seed"] == 0]
    by_trial = {r["trial"]: r["hparams"] for r in kd}
    assert sorted(by_trial) == [0, 1, 2]
    assert by_trial[0] == dict(LogitKD.defaults)
    assert len({json.dumps(h, sort_keys=True) for h in by_trial.values()}) == 3
    for trial in (1, 2):
        for key, dist in LogitKD.search_space.items():
            assert dist.contains(by_trial[trial][key])
    # the same trial has the same setting on every seed
    seed1 = {r["trial"]: r["hparams"] for r in students if r["method"] == "kd" and r["pair"] == "tiny-f2l"
             and r["seed"] == 1}
    assert seed1 == by_trial


def test_more_trials_reuse_the_first_ones(searched):
    result = invoke(*SWEEP, "--trials", "4", "--out", str(searched), "--pairs", "tiny-f2l")
    assert result.exit_code == 0, result.output
    assert "0 skipped" not in result.output
    skipped = [line for line in result.output.splitlines() if "already done" in line]
    assert len(skipped) == 1 + 2 + 2 * 3 * 2  # the teacher and student-only rows, trials 0-2 of kd and cwd
    assert sum(": in-domain" in line for line in result.output.splitlines()) == 2 * 2  # trial 3 of each, 2 seeds


def test_report_select_all_gives_a_table_per_rule_with_choices_and_intervals(searched, tmp_path):
    out = tmp_path / "report"
    result = invoke("report", str(searched), "--select", "all", "--out", str(out), "--format", "md,csv")
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    for rule in ("default", "source-val", "oracle"):
        assert f"## Selection rule: {rule}" in text
        assert f"## Suite smoke, selection: {rule}" in text
    assert "upper bound" in text and "## Sensitivity to hyper-parameters" in text
    tables = sorted(p.name for p in (out / "tables").glob("*.csv"))
    assert len(tables) == 3 * 2  # per rule, per pair
    rows = list(csv.DictReader((out / "tables" / "smoke-default-tiny-f2l.csv").open()))
    delta = [r for r in rows if r["column"] == "Δ student-only" and r["method"] == "kd"]
    assert delta and delta[0]["ci_low"] and delta[0]["ci_high"]  # two seeds a side: an interval
    assert float(delta[0]["ci_low"]) <= float(delta[0]["mean"]) <= float(delta[0]["ci_high"])
    # under default every method reports trial 0 (its defaults), named by its registered name alone
    default_section = text.split("## Selection rule: source-val")[0]
    assert "| tiny-f2l | game2real | kd | 0 |" in default_section
    assert "| kd (" not in default_section and "| kd |" in default_section.split("## Suite")[1]


def test_source_val_reports_the_test_scores_of_the_trial_best_on_source_val(searched, tmp_path):
    recs = [r for r in records(searched) if r["method"] == "cwd" and r["pair"] == "tiny-f2f"]
    val = {}
    for r in recs:
        if r["split"] == "val" and r["role"] == "source":
            val.setdefault(r["trial"], []).append(r["miou"])
    best = min(val, key=lambda t: (-sum(val[t]) / len(val[t]), t))
    test_ood = {}
    for r in recs:
        if r["split"] == "test" and r["role"] == "target" and r["trial"] == best:
            test_ood.setdefault(r["seed"], []).append(r["miou"])
    expected = sum(sum(v) / len(v) for v in test_ood.values()) / len(test_ood)
    out = tmp_path / "report"
    assert invoke("report", str(searched), "--select", "source-val", "--out", str(out), "--format",
                  "csv").exit_code == 0
    rows = list(csv.DictReader((out / "tables" / "smoke-source-val-tiny-f2f.csv").open()))
    got = next(float(r["mean"]) for r in rows if r["method"] == "cwd" and r["column"] == "mean OOD")
    assert got == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(("args", "message"), [
    (("--trials", "0"), "--trials must be a positive integer, got '0'"),
    (("--trials", "x"), "--trials must be a positive integer, got 'x'"),
])
def test_bad_trial_counts_are_one_line_errors_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    result = invoke(*SWEEP, *args, "--out", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [f"Error: {message}"]
    assert not out.exists()


def test_an_unknown_selection_rule_is_a_one_line_error(searched):
    result = invoke("report", str(searched), "--select", "nosuch")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: unknown selection rule 'nosuch'; valid: default, source-val, oracle, all"


def test_a_search_space_on_a_missing_key_is_refused_before_any_work(tmp_path, monkeypatch):
    class BadSpace(LogitKD):
        search_space = {"temprature": LogUniform(0.5, 8.0)}

    monkeypatch.setitem(METHODS._items, "bad-space", BadSpace)
    BadSpace.registered_name = "bad-space"
    out = tmp_path / "out"
    result = invoke("run", "--suite", "smoke", "--methods", "bad-space", "--out", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: method.bad-space.temprature: the search space names a hyper-parameter")
    assert "valid: temperature, weight" in line
    assert not out.exists()


@pytest.mark.parametrize("bench_name", ["game2real", "clear2adverse", "rgb2irrg"])
def test_synthetic_train_val_and_test_images_are_disjoint(bench_name):
    cfg = Config(suite="synth5")
    cfg.data.image_size, cfg.data.train_images, cfg.eval.images = 32, 256, 128
    suite = load_suite("synth5")
    ws = Workspace(cfg, suite, resolve_runtime("cpu", "off"), echo=lambda _: None)
    bench = suite.benchmarks[bench_name]
    assert set(SYNTHETIC_SPLITS.values()) == {"train", "val", "heldout-val"}
    for domain in bench.domains:
        splits = ["train", "val", "test"] if domain == bench.source else ["val", "test"]
        seen: dict[bytes, str] = {}
        for split in splits:
            images = ws.split(domain, split).images
            assert images.dtype == torch.uint8
            for image in images:
                key = image.numpy().tobytes()
                assert seen.get(key, split) == split, f"{domain}: an image is in both {seen[key]} and {split}"
                seen[key] = split
        assert len(seen) == sum(len(ws.split(domain, s).images) for s in splits)
    # nor is a scene layout (its label map) shared between splits, in any domain of the benchmark
    layouts: dict[str, set[bytes]] = {"train": set(), "val": set(), "test": set()}
    for domain in bench.domains:
        for split in (["train"] if domain == bench.source else []) + ["val", "test"]:
            layouts[split] |= {label.numpy().tobytes() for label in ws.split(domain, split).labels}
    assert not layouts["train"] & layouts["val"] and not layouts["train"] & layouts["test"]
    assert not layouts["val"] & layouts["test"]


def test_a_run_recorded_without_val_rows_gets_them_when_skipped(tmp_path):
    """Runs recorded before validation splits existed keep their identity; the next sweep over them scores their
    final weights on the val splits, giving the rows a fresh run writes."""
    out = tmp_path / "out"
    sweep = ("run", "--suite", "smoke", "--benchmarks", "rgb2irrg", "--pairs", "tiny-f2l", "--methods", "gkd",
             "--out", str(out))
    assert invoke(*sweep).exit_code == 0
    fresh = sorted(records(out), key=lambda r: (r["run_dir"], r["split"], r["domain"]))
    assert {r["split"] for r in fresh} == {"val", "test"}
    for path in out.rglob("records.jsonl"):  # as an older kdbench wrote them: test rows only
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "split"}) + "\n" for r in rows
                                if r["split"] == "test"))
    again = invoke(*sweep)
    assert again.exit_code == 0, again.output
    assert again.output.count("already done, skipped") == 2
    assert again.output.count("scored on the 3 val split(s) it was recorded without") == 2
    backfilled = sorted(records(out), key=lambda r: (r["run_dir"], r.get("split", "test"), r["domain"]))
    def val_rows(rows: list[dict]) -> list[dict]:  # eval_s: the scoring's own wall time, measured anew
        return [{k: v for k, v in r.items() if k != "eval_s"} for r in rows if r.get("split") == "val"]

    assert val_rows(backfilled) == val_rows(fresh)


def test_list_methods_details_shows_hyper_parameters_and_search_space():
    result = invoke("list", "methods", "--details")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    kd = lines.index(next(line for line in lines if line.startswith("kd ")))
    assert lines[kd + 1].strip() == "hyper-parameters: temperature=1.0, weight=1.0"
    assert lines[kd + 2].strip() == ("search space: temperature: log-uniform [1, 4]; "
                                     "weight: log-uniform [0.3, 10]")
    only = lines.index(next(line for line in lines if line.startswith("student-only ")))
    assert lines[only + 2].strip() == "search space: none (run at its defaults only)"


def test_a_rule_the_records_cannot_apply_is_a_one_line_error(searched, tmp_path):
    """A trial without val rows on any seed (recorded before val splits existed) makes the val rules unavailable,
    named as such, rather than silently choosing among the trials that have them."""
    copy = tmp_path / "copy"
    shutil.copytree(searched, copy)
    for path in copy.rglob("records.jsonl"):  # trial 1 of kd on tiny-f2l, every seed
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        if rows[0]["method"] == "kd" and rows[0]["trial"] == 1 and rows[0]["pair"] == "tiny-f2l":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "test"))
    result = invoke("report", str(copy), "--select", "source-val", "--format", "md")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --select source-val: these runs lack the validation scores that rule "
                                     "reads (runs made before val splits, or real data); present: default")
    assert invoke("report", str(copy), "--select", "default", "--format", "md").exit_code == 0
