"""Model-selection rules: which trial of a hyper-parameter search a table reports (issue 15).

In the manner of DomainBed's ``model_selection.py`` (Gulrajani and Lopez-Paz, "In Search of Lost Domain
Generalization", ICLR 2021), where the rule, not the method, often decides a domain-generalisation ranking. A rule
looks at the validation rows of one (method, benchmark, pair)'s trials and names one trial; the table then reports
that trial's *test* rows over seeds (:func:`test_scores`).

The frame holds one row per (run, scored domain, split) of one (method, benchmark, pair), with at least:

========== ===================================================================================
``trial``  int, the trial index (0 = the method's defaults)
``seed``   the run's seed
``hparams`` the trial's hyper-parameters (a dict or any hashable key; equal within a trial)
``split``  ``"val"`` (source-val or target-val) or ``"test"``
``role``   ``"source"`` or ``"target"``: the scored domain's part in the benchmark
``domain`` the scored domain's name
``miou``   the score (NaN where missing)
========== ===================================================================================

Rules (:data:`RULES`):

* ``default``: trial 0, looking at nothing.
* ``source-val``: the best seed-mean mIoU on the source domain's val split; what a practitioner without target
  data can do. It never reads a target row.
* ``oracle``: the best seed-mean of the mean target-val mIoU over the benchmark's targets. It uses target labels,
  so it is an upper bound on what selection can reach, never a result a practitioner could report.

No rule reads ``split == "test"`` rows: :func:`select` hands a rule the val rows alone. Ties go to the lowest trial
index. Seeds a trial lacks are left out of its mean (a search may run on fewer seeds than the report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from kdbench.errors import UserError, did_you_mean

COLUMNS = ("trial", "seed", "hparams", "split", "role", "domain", "miou")


def seed_mean_scores(frame: pd.DataFrame, role: str) -> pd.Series:
    """Per trial, the mean over seeds of the val mIoU of the ``role`` domains (within a seed, the mean over those
    domains: one for the source, every target for the targets). Reads val rows of that role only."""
    rows = frame[(frame["split"] == "val") & (frame["role"] == role)].dropna(subset=["miou"])
    per_seed = rows.groupby(["trial", "seed"])["miou"].mean()
    return per_seed.groupby(level="trial").mean()


def best_trial(scores: pd.Series, what: str) -> int:
    """The trial with the highest score, the lowest trial index among equals."""
    if scores.empty:
        raise UserError(f"selection needs {what}; these runs have none")
    return int(min(scores.index, key=lambda trial: (-scores[trial], trial)))


def default(frame: pd.DataFrame) -> int:
    """Trial 0, the method's defaults, looking at no score (what a table without a search reports)."""
    if not (frame["trial"] == 0).any():
        raise UserError(f"selection rule 'default' needs trial 0 (the defaults); these runs have trials "
                        f"{sorted(int(t) for t in frame['trial'].unique())}")
    return 0


def source_val(frame: pd.DataFrame) -> int:
    """The trial with the best seed-mean source-val mIoU: held-out images of the training domain, what a
    practitioner without target data can select on. Never reads a target row."""
    return best_trial(seed_mean_scores(frame, "source"), "source-domain val rows")


def oracle(frame: pd.DataFrame) -> int:
    """The trial with the best seed-mean of the mean target-val mIoU. It selects with target labels, which a
    domain-generalisation method may not see: an upper bound on what selection can reach, never a result."""
    return best_trial(seed_mean_scores(frame, "target"), "target-domain val rows")


@dataclass(frozen=True)
class Rule:
    """A named selection rule: ``choose`` (frame -> trial), ``reads`` (the role of the val rows it scores on;
    ``None``: it reads none), ``uses_target_labels``."""

    name: str
    choose: Callable[[pd.DataFrame], int]
    reads: str | None
    uses_target_labels: bool

    def __call__(self, frame: pd.DataFrame) -> int:
        return self.choose(frame)


RULES: dict[str, Rule] = {
    "default": Rule("default", default, None, False),
    "source-val": Rule("source-val", source_val, "source", False),
    "oracle": Rule("oracle", oracle, "target", True),
}


def get_rule(name: str) -> Rule:
    """The rule called ``name``, or a one-line error listing the valid ones."""
    if name not in RULES:
        raise UserError(f"unknown selection rule {name!r};{did_you_mean(name, RULES)} valid: {', '.join(RULES)}")
    return RULES[name]


def parse_rules(text: str) -> list[str]:
    """``--select``'s value, ``all`` or a comma-separated list of rule names, as a checked list of names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(RULES)
    if not names:
        raise UserError(f"--select needs a selection rule; valid: {', '.join(RULES)}, all")
    for name in names:
        if name not in RULES:
            raise UserError(f"unknown selection rule {name!r};{did_you_mean(name, RULES)} valid: "
                              f"{', '.join(RULES)}, all")
    return list(dict.fromkeys(names))


def available_rules(frame: pd.DataFrame) -> list[str]:
    """The rules that can choose on this frame: ``default`` where trial 0 ran, the others where their val rows
    exist (results recorded before val splits existed have test rows only)."""
    _check_frame(frame)
    names = []
    for name, rule in RULES.items():
        if rule.reads is None:
            if (frame["trial"] == 0).any():
                names.append(name)
        elif not seed_mean_scores(frame, rule.reads).empty:
            names.append(name)
    return names


@dataclass(frozen=True)
class Selection:
    """What a rule chose for one (method, benchmark, pair): ``trial`` and its ``hparams``, the ``score`` it was
    chosen on (``None`` for ``default``), ``seeds``: how many seeds that score averages (for ``default``, how
    many seeds trial 0 ran), and ``trials``: how many trials were searched."""

    rule: str
    trial: int
    hparams: Any
    score: float | None
    seeds: int
    trials: int
    uses_target_labels: bool


def select(frame: pd.DataFrame, rule: str) -> Selection:
    """Apply the rule called ``rule`` to one (method, benchmark, pair)'s rows. The rule is handed the val rows
    alone (all rows for ``default``, which reads no score), so no choice can depend on a test score."""
    chosen = get_rule(rule)
    _check_frame(frame)
    if chosen.reads is None:
        trial, score = chosen(frame), None
        seeds = frame.loc[frame["trial"] == trial, "seed"].nunique()
    else:
        val = frame[frame["split"] == "val"]
        trial = chosen(val)
        score = float(seed_mean_scores(val, chosen.reads)[trial])
        scored = val[(val["trial"] == trial) & (val["role"] == chosen.reads)].dropna(subset=["miou"])
        seeds = scored["seed"].nunique()
    hparams = frame.loc[frame["trial"] == trial, "hparams"].iloc[0]
    return Selection(rule=rule, trial=trial, hparams=hparams, score=score, seeds=int(seeds),
                     trials=int(frame["trial"].nunique()), uses_target_labels=chosen.uses_target_labels)


def test_scores(frame: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """The chosen trial's test rows (every seed, every scored domain): what a table under the rule reports."""
    _check_frame(frame)
    rows = frame[(frame["trial"] == selection.trial) & (frame["split"] == "test")]
    return rows.sort_values(["seed", "role", "domain"], kind="stable").reset_index(drop=True)


test_scores.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"selection frame lacks columns {missing}; needs {list(COLUMNS)}")
    for column in ("method", "benchmark", "pair"):
        if column in frame.columns and frame[column].nunique() > 1:
            raise ValueError(f"selection works on one (method, benchmark, pair); the frame has several {column}s: "
                             f"{sorted(map(str, frame[column].unique()))}")
    bad = set(frame["split"].unique()) - {"val", "test"}
    if bad:
        raise ValueError(f"selection frame: split must be 'val' or 'test', not {sorted(map(str, bad))}")
