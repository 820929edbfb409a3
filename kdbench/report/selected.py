"""Model selection over a results tree (issue 15): for each rule, the runs of the trial it chose in every
(setting, benchmark, pair, method), the settings chosen, and how much each method's result moves over its trials.

A rule (``kdbench.selection``) sees one cell's validation rows and names a trial; the report then shows that
trial's *test* rows over seeds, so no table is chosen on the scores it prints. Trials are told apart by the trial
index each run recorded and, within an index, by hyper-parameters (two settings run by hand as trial 0 stay two
candidates, the first of them being trial 0 for ``default``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from kdbench.errors import UserError
from kdbench.selection import RULES, available_rules, select

CELL = ["suite", "setting", "benchmark", "pair", "base"]


@dataclass
class RuleView:
    """What one rule reports: ``scores`` (``run_scores`` rows of the chosen trials and the teacher rows, each
    method named by its registered name) and ``chosen`` (one row per cell: the trial, its tuned values, the
    validation score it was chosen on, seeds and trials)."""

    rule: str
    scores: pd.DataFrame
    chosen: pd.DataFrame


def searched(scores: pd.DataFrame) -> bool:
    """Whether any run is a drawn trial (trial > 0); otherwise every rule reports the same runs. Settings run by
    hand (``--set``, all trial 0) stay the labelled rows of a plain report."""
    return bool((scores[scores.reference != "teacher"].trial > 0).any())


def rules_present(records: pd.DataFrame, scores: pd.DataFrame) -> list[str]:
    """The rules every cell can apply: ``default`` always, the others where every trial of every cell scored the
    validation rows they read (a trial recorded before val splits existed would otherwise drop out of the choice
    unseen)."""
    names = list(RULES)
    for _, cell in scores[scores.reference != "teacher"].groupby(CELL, sort=False):
        frame = _selection_frame(records, cell)
        for _, rows in frame.groupby("trial"):
            names = [n for n in names if n in available_rules(rows.assign(trial=0))]
    return names


def check_rules(wanted: list[str], present: list[str]) -> None:
    missing = [w for w in wanted if w not in present]
    if missing:
        raise UserError(f"--select {','.join(missing)}: these runs lack the validation scores that rule reads "
                        f"(runs made before val splits, or real data); present: {', '.join(present)}")


def apply_rule(records: pd.DataFrame, scores: pd.DataFrame, rule: str, tuned: dict[str, list[str]]) -> RuleView:
    """``rule`` in every cell of ``scores``; ``tuned``: each method's search-space keys (the values the chosen
    table shows)."""
    kept, chosen = [scores[scores.reference == "teacher"]], []
    for key, cell in scores[scores.reference != "teacher"].groupby(CELL, sort=False):
        frame = _selection_frame(records, cell)
        pick = select(frame, rule)
        runs = cell[cell.run_path.isin(set(frame[frame.trial == pick.trial].run_path))].copy()
        runs["method"] = runs["base"]
        kept.append(runs)
        hparams = json.loads(runs.hparams.iloc[0])
        keys = tuned.get(key[-1], [])
        chosen.append({**dict(zip(CELL, key, strict=True)), "pair_kind": runs.pair_kind.iloc[0],
                       "trial": int(runs.trial.iloc[0]), "values": {k: hparams[k] for k in keys if k in hparams},
                       "score": pick.score, "seeds": pick.seeds, "trials": pick.trials})
    return RuleView(rule, pd.concat(kept, ignore_index=True), pd.DataFrame(chosen))


def sensitivity(scores: pd.DataFrame) -> pd.DataFrame:
    """Per cell with more than one trial: trials, and the lowest, highest and spread of the seed-mean OOD over
    the trials (test rows: this describes the search, it chooses nothing)."""
    rows = []
    for key, cell in scores[scores.reference != "teacher"].groupby(CELL, sort=False):
        per_trial = cell.groupby(["trial", "hparams"])["out-of-domain"].mean()
        if len(per_trial) < 2:
            continue
        rows.append({**dict(zip(CELL, key, strict=True)), "trials": len(per_trial), "low": float(per_trial.min()),
                     "high": float(per_trial.max()), "std": float(per_trial.std(ddof=1))})
    return pd.DataFrame(rows)


def _selection_frame(records: pd.DataFrame, cell: pd.DataFrame) -> pd.DataFrame:
    """One cell's score rows in ``kdbench.selection``'s shape, ``trial`` numbering the cell's candidates."""
    candidates = sorted({(int(t), h) for t, h in zip(cell.trial, cell.hparams, strict=True)})
    number = {c: i for i, c in enumerate(candidates)}
    by_run = {p: number[(int(t), h)] for p, t, h in zip(cell.run_path, cell.trial, cell.hparams, strict=True)}
    rows = records[records.run_path.isin(set(by_run))]
    split = rows["split"].fillna("test") if "split" in rows else pd.Series("test", index=rows.index)
    return pd.DataFrame({"trial": rows.run_path.map(by_run), "seed": rows.seed.astype(int),
                         "hparams": rows.run_path.map(dict(zip(cell.run_path, cell.hparams, strict=True))),
                         "split": split, "role": rows.role, "domain": rows.domain, "miou": rows.miou.astype(float),
                         "run_path": rows.run_path})
