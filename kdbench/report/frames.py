"""From run directories to one row per run: the frames every table and plot of the report is built from.

A results tree may be messy: unfinished sweeps, failed runs, unreadable record lines, runs of different suites or
schedules side by side, one method run with two hyper-parameter sets. This module sorts that out once:

- runs are grouped by **setting** (suite, evaluation protocol and every data/eval/pretrain/train value of the run
  config); runs of different settings are never averaged together, each setting gets its own tables, labelled by
  the config values that tell it apart;
- a method run with several hyper-parameter sets in one setting becomes several rows, labelled by the values that
  differ (``cwd (temperature=2.0)``);
- the teacher row joins every setting whose data, evaluation and pretraining it shares.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kdbench.errors import UserError
from kdbench.results import CONFIG, load_records

SHARED_SECTIONS = ("data", "eval", "pretrain")
#: what a run cost, as its records give it (``kdbench.record.Record``): parameters of the row's model and of the
#: method's own modules, GFLOPs of one evaluation forward, training images per second
COST_FIELDS = ("student_params", "extra_params", "gflops", "train_images_per_s")


@dataclass
class Results:
    """Everything read from a results tree."""

    records: pd.DataFrame
    failures: list[dict[str, str]]
    skipped_lines: list[str] = field(default_factory=list)


def read_results(root: Path) -> Results:
    """Load every finished run's records under ``root``, each annotated with its run directory and run config."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results directory {root} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records, failures = load_records(root)
    skipped = [str(w.message) for w in caught]
    configs: dict[str, dict[str, Any]] = {}
    for record in records:
        path = record["run_path"]
        if path not in configs:
            configs[path] = _run_identity(Path(path))
        record["identity"] = configs[path]
    return Results(pd.DataFrame.from_records(records), failures, skipped)


def _run_identity(run: Path) -> dict[str, Any]:
    try:
        identity = (yaml.safe_load((run / CONFIG).read_text()) or {}).get("identity", {})
    except (OSError, yaml.YAMLError):
        identity = {}
    return identity if isinstance(identity, dict) else {}


def _flatten(identity: dict[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    flat = {}
    for section in sections:
        for key, value in (identity.get(section) or {}).items():
            flat[f"{section}.{key}"] = value
    return flat


def _differing(items: list[dict[str, Any]]) -> list[str]:
    keys = sorted(set().union(*items)) if items else []
    return [k for k in keys if len({json.dumps(i.get(k), sort_keys=True, default=str) for i in items}) > 1]


def _label(values: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={values.get(k, '–')}" for k in keys)


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def run_scores(records: pd.DataFrame, family: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run and setting: in-domain mIoU, each target's mIoU, their plain mean (as the paper), and how
    long the method's stages trained. Columns: suite, setting, benchmark, source, pair, pair_kind, method (display
    label), base (the registered method), reference (the row's reference role, ``kdbench.record.REFERENCE_ROLES``;
    "" for a compared method), family (the method an ablation ablates, else the method), seed,
    in-domain, out-of-domain, one per target domain, train_s, train_steps (every stage's steps), run_path,
    teacher_digest, device, precision, trial (0: the defaults), hparams (the run's hyper-parameters as sorted
    JSON), and the cost fields of :data:`COST_FIELDS` (NaN where the run did not record them). Validation rows
    are left out."""
    family = family or {}
    records = test_rows(records)
    runs = []
    for path, group in records.groupby("run_path", sort=False):
        first = group.iloc[0]
        identity = first.identity if isinstance(first.identity, dict) else {}
        shared = {"suite": first.suite, "protocol": first.protocol, **_flatten(identity, SHARED_SECTIONS)}
        train = _flatten(identity, ("train",)) if first.reference != "teacher" else None
        source = group[group.role == "source"]
        targets = group[group.role == "target"]
        row = {"suite": first.suite, "benchmark": first.benchmark,
               "source": source.domain.iloc[0] if len(source) else "?", "pair": first.pair,
               "pair_kind": first.pair_kind, "method": first.method, "base": first.method,
               "reference": first.reference, "family": family.get(first.method, first.method),
               "seed": int(first.seed),
               "in-domain": float(source.miou.iloc[0]) if len(source) else float("nan"),
               "out-of-domain": float(targets.miou.mean()) if len(targets) else float("nan"),
               "train_s": _stages_total(first.stages, "wall_s"),
               "train_steps": _stages_total(first.stages, "steps"), "run_path": path,
               "teacher_digest": first.teacher_digest, "device": first.device,
               "precision": first.precision, "_shared": shared, "_train": train, "trial": int(first.trial),
               "_hparams": first.hparams if isinstance(first.hparams, dict) else {},
               **{name: _measured(first.get(name)) for name in COST_FIELDS}}
        row.update({r.domain: float(r.miou) for r in targets.itertuples()})
        runs.append(row)
    if not runs:
        return pd.DataFrame()
    return _label_methods(_assign_settings(runs))


def _measured(value: Any) -> float:
    """A recorded count or measure as a float; NaN where it was not recorded."""
    return float("nan") if value is None or pd.isna(value) else float(value)


def test_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The rows scored on test splits."""
    return records[records.split == "test"]


def _stages_total(stages: Any, field: str) -> float:
    """``field`` summed over a run's training stages (``wall_s``: its training seconds; ``steps``: its optimiser
    steps, the budget: GKD's stages 1a, 1b and 2 together); NaN where the record has no stage list."""
    if not isinstance(stages, list):
        return float("nan")
    return float(sum(st.get(field, 0) for st in stages))


def _assign_settings(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every run its setting label; copy each teacher run into every student setting it matches."""
    out = []
    for suite in dict.fromkeys(r["suite"] for r in runs):
        suite_runs = [r for r in runs if r["suite"] == suite]
        settings: dict[str, tuple[dict[str, Any], str]] = {}  # key -> (all values, key of the shared part)
        for run in suite_runs:
            if run["_train"] is not None:
                settings[_key({**run["_shared"], **run["_train"]})] = ({**run["_shared"], **run["_train"]},
                                                                      _key(run["_shared"]))
        covered = {shared for _, shared in settings.values()}
        for run in suite_runs:
            if run["_train"] is None and _key(run["_shared"]) not in covered:
                settings[_key(run["_shared"])] = (run["_shared"], _key(run["_shared"]))
        keys = _differing([values for values, _ in settings.values()])
        labels = {k: _label(values, keys) for k, (values, _) in settings.items()}
        for run in suite_runs:
            if run["_train"] is not None:
                out.append({**run, "setting": labels[_key({**run["_shared"], **run["_train"]})]})
            else:
                out.extend({**run, "setting": labels[k]} for k, (_, shared) in settings.items()
                           if shared == _key(run["_shared"]))
    return out


def _label_methods(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """A method run with more than one hyper-parameter set in a setting gets one row per set, named by the values
    that differ. A text-valued setting that differs only from run to run (one value per benchmark and seed, such as
    a stage-1 checkpoint file per seed for GKD's ``stage1_from``) is a per-run input, not a variant: it splits no
    row."""
    frame = pd.DataFrame(runs)
    labels = []
    variants = {}
    for (suite, setting, method), group in frame.groupby(["suite", "setting", "method"], sort=False):
        keys = [k for k in _differing(list(group._hparams)) if not _per_run_input(group, k)]
        sets = {_key(h): h for h in group._hparams}
        variants[(suite, setting, method)] = {k: (f"{method} ({_label(h, keys)})" if keys else method)
                                              for k, h in sets.items()}
    for suite, setting, method, hparams in zip(frame.suite, frame.setting, frame.method, frame._hparams, strict=True):
        labels.append(variants[(suite, setting, method)][_key(hparams)])
    frame["method"] = labels
    frame["hparams"] = [_key(h) for h in frame._hparams]
    return frame.drop(columns=["_shared", "_train", "_hparams"])


def _per_run_input(group: pd.DataFrame, key: str) -> bool:
    values = [h.get(key) for h in group._hparams]
    if not all(isinstance(v, str) for v in values):
        return False
    per_run = pd.DataFrame({"benchmark": group.benchmark.values, "seed": group.seed.values, "value": values})
    return bool((per_run.groupby(["benchmark", "seed"]).value.nunique() == 1).all()
                and per_run.value.nunique() == len(per_run))


#: the order reference rows head a table in; compared methods follow, alphabetically
REFERENCE_ORDER = ("teacher", "baseline", "reference")


def roles(scores: pd.DataFrame) -> dict[str, str]:
    """Each method label's reference role ("" for a compared method)."""
    return dict(zip(scores.method, scores.reference, strict=True))


def method_order(scores: pd.DataFrame) -> list[str]:
    """The method labels of ``scores``: the reference rows by role (teacher, the baseline, other references), then
    the rest alphabetically (an ablation sorts beside the method it ablates)."""
    role = roles(scores)
    rank = {r: i for i, r in enumerate(REFERENCE_ORDER)}
    return sorted(role, key=lambda m: (rank.get(role[m], len(rank)), m))


def missing_runs(scores: pd.DataFrame, benchmarks: list[str]) -> list[str]:
    """The (method, benchmark, seed) cells of one (suite, setting, pair) that some other cell implies should exist:
    every method on every benchmark of the suite with every seed used by any method."""
    teacher = scores[scores.reference == "teacher"]
    students = scores[scores.reference != "teacher"]
    seeds = sorted(set(students.seed))
    lines = []
    for method in method_order(students):
        runs = students[students.method == method]
        for bench in benchmarks:
            have = set(runs[runs.benchmark == bench].seed)
            lacking = [s for s in seeds if s not in have]
            if lacking:
                lines.append(f"{method} on {bench}: seed{'s' if len(lacking) > 1 else ''} "
                             f"{', '.join(map(str, lacking))}")
    if benchmarks and not teacher.empty:
        done = set(teacher.benchmark)
        lines += [f"{teacher.method.iloc[0]} on {b}" for b in benchmarks if b not in done]
    return lines


def targets_by_benchmark(records: pd.DataFrame, suite: str) -> dict[str, list[str]]:
    """Each benchmark's target domains, in the order the records list them."""
    rows = records[(records.suite == suite) & (records.role == "target")]
    return {b: list(dict.fromkeys(g.domain)) for b, g in rows.groupby("benchmark", sort=False)}


def suite_benchmark_order(suite: str, benchmarks: list[str]) -> list[str]:
    """``benchmarks`` in the order the suite declares them, where the suite is known; else as found."""
    from kdbench.suite import load_suite

    try:
        order = list(load_suite(suite).benchmarks)
    except (UserError, OSError):
        return benchmarks
    return sorted(benchmarks, key=lambda b: order.index(b) if b in order else len(order))
