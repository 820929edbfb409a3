"""Selection rules (issue 15) on a hand-built frame where default, source-val and oracle choose three different
trials, with proofs that source-val never reads target rows and no rule reads test rows."""

from __future__ import annotations

import pandas as pd
import pytest

from kdbench import selection as sel
from kdbench.errors import UserError

SEEDS = (0, 1, 2)
TARGETS = ("city", "dashcam")
# per trial: source val per seed, then each target's val per seed
VAL = {
    0: {"game": (50, 52, 54), "city": (30, 30, 30), "dashcam": (20, 20, 20)},   # source 52, targets 25
    1: {"game": (60, 61, 62), "city": (28, 28, 28), "dashcam": (22, 22, 22)},   # source 61 (best), targets 25
    2: {"game": (55, 55, 55), "city": (35, 36, 37), "dashcam": (25, 25, 25)},   # source 55, targets 30.5 (best)
    # best single source seed (80) and best single target (city 45), but neither is best on the seed mean
    3: {"game": (40, 80, 41), "city": (45, 45, 45), "dashcam": (5, 5, 5)},      # source 53.67, targets 25
}
# test scores favour trial 3 everywhere: a rule that read them would pick it
TEST = {trial: {"game": (70 + trial,) * 3, "city": (40 + trial,) * 3, "dashcam": (30 + trial,) * 3}
        for trial in VAL}


def frame(val: dict = VAL, test: dict = TEST) -> pd.DataFrame:
    rows = []
    for split, table in (("val", val), ("test", test)):
        for trial, domains in table.items():
            for domain, scores in domains.items():
                for seed, miou in zip(SEEDS, scores, strict=True):
                    rows.append({"method": "kd", "benchmark": "game2real", "pair": "f2l", "trial": trial,
                                 "seed": seed, "hparams": {"weight": float(trial + 1)}, "split": split,
                                 "role": "source" if domain == "game" else "target", "domain": domain,
                                 "miou": float(miou)})
    return pd.DataFrame(rows)


def test_the_three_rules_choose_three_different_trials() -> None:
    runs = frame()
    assert sel.RULES["default"](runs) == 0
    assert sel.RULES["source-val"](runs) == 1
    assert sel.RULES["oracle"](runs) == 2


def test_select_reports_trial_hparams_score_and_seeds() -> None:
    runs = frame()
    default = sel.select(runs, "default")
    assert (default.trial, default.hparams, default.score, default.seeds, default.trials) == (0, {"weight": 1.0},
                                                                                              None, 3, 4)
    source = sel.select(runs, "source-val")
    assert (source.trial, source.hparams, source.seeds) == (1, {"weight": 2.0}, 3)
    assert source.score == pytest.approx((60 + 61 + 62) / 3, abs=1e-12) and not source.uses_target_labels
    oracle = sel.select(runs, "oracle")
    per_seed = [(35 + 25) / 2, (36 + 25) / 2, (37 + 25) / 2]
    assert oracle.trial == 2 and oracle.score == pytest.approx(sum(per_seed) / 3, abs=1e-12)
    assert oracle.uses_target_labels and sel.RULES["oracle"].uses_target_labels


def test_seed_means_not_single_seeds_decide() -> None:
    scores = sel.seed_mean_scores(frame(), "source")
    assert scores[3] == pytest.approx((40 + 80 + 41) / 3) and scores.idxmax() == 1
    targets = sel.seed_mean_scores(frame(), "target")
    assert targets[3] == pytest.approx(25.0) and targets[0] == pytest.approx(25.0)


def test_source_val_never_reads_target_rows() -> None:
    runs = frame()
    changed = runs.copy()
    target_val = (changed["split"] == "val") & (changed["role"] == "target")
    changed.loc[target_val & (changed["trial"] == 0), "miou"] = 99.0
    assert sel.select(changed, "source-val") == sel.select(runs, "source-val")
    assert sel.select(changed, "oracle").trial == 0  # the oracle does read them
    dropped = runs[~(runs["role"] == "target")]
    assert sel.select(dropped, "source-val") == sel.select(runs, "source-val")


def test_no_rule_reads_test_rows() -> None:
    runs = frame()
    chosen = {rule: sel.select(runs, rule) for rule in sel.RULES}
    reversed_test = {trial: {d: (100 - 10 * trial,) * 3 for d in ("game", *TARGETS)} for trial in VAL}
    for other in (frame(test=reversed_test), runs[runs["split"] == "val"]):
        for rule, selection in chosen.items():
            again = sel.select(other, rule)
            assert (again.trial, again.score, again.seeds) == (selection.trial, selection.score, selection.seeds)


def test_ties_go_to_the_lowest_trial() -> None:
    tied = {trial: dict(domains, game=(61, 61, 61)) for trial, domains in VAL.items()}
    assert sel.select(frame(val=tied), "source-val").trial == 0
    two = {1: VAL[1], 2: dict(VAL[2], game=VAL[1]["game"]), 3: VAL[3]}
    assert sel.select(frame(val=two, test={t: TEST[t] for t in two}), "source-val").trial == 1


def test_a_trial_searched_on_fewer_seeds() -> None:
    runs = frame()
    keep = ~((runs["trial"] == 1) & (runs["split"] == "val") & (runs["seed"] > 0))
    source = sel.select(runs[keep], "source-val")
    assert (source.trial, source.score, source.seeds) == (1, 60.0, 1)
    missing = runs.copy()
    missing.loc[(missing["trial"] == 1) & (missing["split"] == "val") & (missing["seed"] == 2), "miou"] = float("nan")
    again = sel.select(missing, "source-val")
    assert (again.trial, again.score, again.seeds) == (1, 60.5, 2)


def test_test_scores_are_the_chosen_trials_test_rows_per_seed() -> None:
    runs = frame()
    rows = sel.test_scores(runs, sel.select(runs, "oracle"))
    assert set(rows["trial"]) == {2} and set(rows["split"]) == {"test"}
    assert len(rows) == len(SEEDS) * 3 and list(rows["seed"].unique()) == list(SEEDS)
    target_means = rows[rows["role"] == "target"].groupby("seed")["miou"].mean()
    assert target_means.tolist() == [(42 + 32) / 2] * 3


def test_unknown_rules_give_one_line_listing_valid_ones() -> None:
    with pytest.raises(UserError) as err:
        sel.select(frame(), "nosuch")
    assert str(err.value) == "unknown selection rule 'nosuch'; valid: default, source-val, oracle"
    with pytest.raises(UserError) as err:
        sel.parse_rules("default,nosuch")
    assert str(err.value) == "unknown selection rule 'nosuch'; valid: default, source-val, oracle, all"


def test_parse_rules() -> None:
    assert sel.parse_rules("all") == ["default", "source-val", "oracle"]
    assert sel.parse_rules("oracle, default,oracle") == ["oracle", "default"]
    with pytest.raises(UserError, match="needs a selection rule"):
        sel.parse_rules(" , ")


def test_available_rules_and_missing_val_rows() -> None:
    runs = frame()
    assert sel.available_rules(runs) == ["default", "source-val", "oracle"]
    test_only = runs[runs["split"] == "test"]
    assert sel.available_rules(test_only) == ["default"]
    with pytest.raises(UserError) as err:
        sel.select(test_only, "source-val")
    assert str(err.value) == "selection needs source-domain val rows; these runs have none"
    with pytest.raises(UserError, match="needs trial 0"):
        sel.select(runs[runs["trial"] > 0], "default")


def test_the_frame_is_checked() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        sel.select(frame().drop(columns=["role"]), "default")
    mixed = pd.concat([frame(), frame().assign(method="cwd")])
    with pytest.raises(ValueError, match="several methods"):
        sel.select(mixed, "default")
    with pytest.raises(ValueError, match="split must be"):
        sel.select(frame().assign(split="train"), "default")
