"""Search spaces and trial sampling (issue 15): distributions, the one-line checks, every shipped space, and
draw_trials' guarantees (trial 0 = defaults, determinism, prefix stability, ranges and types kept)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdbench.errors import UserError
from kdbench.method import METHODS, Method
from kdbench.search import (
    Choice,
    IntUniform,
    LogUniform,
    Uniform,
    check_trial_count,
    describe_space,
    draw_trials,
    space_size,
    tunable,
)


def toy(space: dict, defaults: dict | None = None, name: str = "toy") -> type[Method]:
    """A Method class with the given space, never registered (check_search_space needs only the class)."""
    base_defaults = defaults if defaults is not None else {"weight": 1.0, "tau": 0.5, "steps": 10, "mode": "a"}

    class Toy(Method):
        defaults = base_defaults
        search_space = space

    Toy.registered_name = name
    return Toy


TOY_SPACE = {"weight": LogUniform(0.1, 10.0), "tau": Uniform(0.25, 0.75), "steps": IntUniform(5, 20),
             "mode": Choice(("a", "b", "c"))}


# ---------------------------------------------------------------- distributions


def test_samples_lie_in_their_ranges_with_their_types() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        w, t, s, m = (TOY_SPACE[k].sample(rng) for k in ("weight", "tau", "steps", "mode"))
        assert isinstance(w, float) and 0.1 <= w <= 10.0
        assert isinstance(t, float) and 0.25 <= t <= 0.75
        assert type(s) is int and 5 <= s <= 20
        assert m in ("a", "b", "c")


def test_int_uniform_includes_both_ends_and_log_uniform_spreads_over_decades() -> None:
    rng = np.random.default_rng(1)
    ints = {IntUniform(1, 3).sample(rng) for _ in range(200)}
    assert ints == {1, 2, 3}
    logs = np.log10([LogUniform(1e-3, 1e3).sample(rng) for _ in range(2000)])
    # uniform in log10 on [-3, 3]: each of the six decades gets about a sixth
    counts = np.histogram(logs, bins=6, range=(-3, 3))[0]
    assert counts.min() > 2000 / 6 * 0.7


def test_floats_are_rounded_to_three_significant_digits_and_stay_in_range() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        value = LogUniform(3e-7, 3e-5).sample(rng)
        assert float(f"{value:.3g}") == value and 3e-7 <= value <= 3e-5
    assert Uniform(0.1234, 0.1236).contains(Uniform(0.1234, 0.1236).sample(rng))


def test_choice_accepts_a_list_and_keeps_a_tuple() -> None:
    assert Choice([1, 2]).values == (1, 2)
    assert hash(Choice([1, 2])) == hash(Choice((1, 2)))


@pytest.mark.parametrize(("dist", "default", "needle"), [
    (Uniform(1.0, 1.0), 1.0, "impossible uniform range: low=1.0 must be below high=1.0"),
    (LogUniform(3.0, 1.0), 1.0, "impossible log-uniform range"),
    (IntUniform(5, 2), 3, "impossible integer-uniform range"),
    (LogUniform(0.0, 1.0), 0.5, "log-uniform range needs low > 0, got low=0.0"),
    (LogUniform(-1.0, 1.0), 0.5, "log-uniform range needs low > 0"),
    (Choice(()), "a", "a choice needs at least one value"),
    (Choice(("a", 2)), "a", "choice value 2 has type int, but the default 'a' has type str"),
    (Choice((True, 1)), True, "choice value 1 has type int"),
    (Uniform(0.0, 1.0), 3, "needs a float default, but the default is 3; use IntUniform or Choice"),
    (IntUniform(1, 4), 2.0, "needs an int default, but the default is 2.0"),
    (IntUniform(1.0, 4.0), 2, "integer-uniform bounds must be ints"),
    (Uniform(0.0, math.inf), 0.5, "bounds must be finite"),
    (Uniform("0", 1.0), 0.5, "bounds must be numbers"),
])
def test_bad_distributions_give_one_line_naming_the_setting(dist, default, needle: str) -> None:
    with pytest.raises(UserError) as err:
        dist.check("method.toy.key", default)
    message = str(err.value)
    assert message.startswith("method.toy.key: ") and needle in message and "\n" not in message


def test_a_float_default_takes_int_choices_as_floats() -> None:
    Choice((1, 2.5)).check("method.toy.weight", 1.0)
    trials = draw_trials(toy({"weight": Choice((1, 2, 3))}), 4, 0, "s")
    assert all(type(t["weight"]) is float for t in trials)


# ---------------------------------------------------------------- whole spaces


def test_a_space_key_the_method_lacks_is_refused_in_one_line() -> None:
    with pytest.raises(UserError) as err:
        toy({"wieght": LogUniform(0.1, 1.0)}).check_search_space()
    assert str(err.value) == ("method.toy.wieght: the search space names a hyper-parameter 'toy' does not have; "
                              "valid: mode, steps, tau, weight")


@pytest.mark.parametrize(("space", "needle"), [
    ({"weight": LogUniform(1.0, 0.5)}, "method.toy.weight: impossible log-uniform range"),
    ({"weight": LogUniform(0.0, 1.0)}, "method.toy.weight: a log-uniform range needs low > 0"),
    ({"tau": Uniform(0.7, 0.2)}, "method.toy.tau: impossible uniform range"),
    ({"tau": (0.1, 0.2)}, "method.toy.tau: a search-space entry must be LogUniform, Uniform, IntUniform or Choice"),
])
def test_bad_spaces_fail_the_method_check_in_one_line(space: dict, needle: str) -> None:
    with pytest.raises(UserError) as err:
        toy(space).check_search_space()
    assert str(err.value).startswith(needle) and "\n" not in str(err.value)


def test_a_range_reaching_values_the_method_refuses_is_refused() -> None:
    gkd = METHODS.get("gkd")

    class WideGKD(gkd):
        search_space = {"mask_ratio": Uniform(0.5, 1.5)}

    WideGKD.registered_name = "wide-gkd"
    with pytest.raises(UserError) as err:
        WideGKD.check_search_space()
    message = str(err.value)
    assert message.startswith("method.wide-gkd.mask_ratio: the search range uniform [0.5, 1.5] reaches 1.5")
    assert "must lie in [0, 1]" in message and "\n" not in message


def test_space_size_counts_finite_spaces_only() -> None:
    assert space_size({"steps": IntUniform(1, 3), "mode": Choice(("a", "b"))}) == 6
    assert space_size(TOY_SPACE) == math.inf
    assert space_size({}) == 1


SHIPPED = METHODS.names()


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_passes_its_check_and_names_existing_keys(name: str) -> None:
    cls = METHODS.get(name)
    cls.check_search_space()
    assert set(cls.search_space) <= set(cls.defaults)


# GKD's step counts default to 0, which means train.steps: 300 on the quick preset, which the space contains.
STEP_KEYS = {"proxy_steps", "distill_steps"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_contains_its_defaults(name: str) -> None:
    cls = METHODS.get(name)
    for key, dist in cls.search_space.items():
        default = cls.defaults[key]
        assert dist.contains(300 if key in STEP_KEYS and default == 0 else default), (name, key)


def test_shipped_spaces_cover_what_the_issue_asks() -> None:
    def keys(name: str) -> set[str]:
        return set(METHODS.get(name).search_space)

    assert keys("student-only") == set() and not tunable(METHODS.get("student-only"))
    assert {"temperature", "weight"} <= keys("kd") and {"temperature", "weight"} <= keys("cwd")
    assert {"weight"} <= keys("fitnet") and {"weight"} <= keys("vanilla-kd")
    assert {"temperature", "weight", "kd_weight"} <= keys("cwd-kd")
    assert {"alpha", "beta", "mask_ratio"} <= keys("vitkd")
    assert {"token_weight", "fea_weight", "patch_weight", "mask_ratio", "mask_probability"} <= keys("proteus")
    assert {"lambda_fd", "lambda_ctr", "tau"} <= keys("afdcd")
    gkd = keys("gkd")
    assert {"cls_weight", "feat_weight", "mask_weight", "mask_ratio", "mask_probability", "distill_lr",
            "proxy_steps", "distill_steps"} <= gkd
    assert keys("gkd-mse") == keys("gkd-final-readout") == gkd
    assert keys("gkd-no-mask") == gkd - {"mask_weight", "mask_ratio", "mask_probability"}
    assert keys("gkd-no-cls") == gkd - {"cls_weight"}
    assert keys("gkd-single-stage") == gkd - {"distill_lr", "proxy_steps", "distill_steps"}


def test_describe_space() -> None:
    assert describe_space(METHODS.get("student-only")) == "no search space (run at its defaults only)"
    assert describe_space(METHODS.get("fitnet")) == "weight: log-uniform [0.1, 100]"
    assert "proxy_steps: choice {150, 300, 600}" in describe_space(METHODS.get("gkd"))


# ---------------------------------------------------------------- trials


def test_trial_zero_is_exactly_the_defaults() -> None:
    for name in SHIPPED:
        cls = METHODS.get(name)
        trials = draw_trials(cls, 5, 0, f"synth5/f2l/{name}")
        assert trials[0] == dict(cls.defaults)
        assert all(set(t) == set(cls.defaults) for t in trials)
        assert all(t[k] == cls.defaults[k] for t in trials for k in cls.defaults if k not in cls.search_space)


def test_drawing_is_deterministic_and_depends_on_seed_and_scope() -> None:
    cls = toy(TOY_SPACE)
    first = draw_trials(cls, 6, 3, "synth5/f2l/toy")
    assert first == draw_trials(cls, 6, 3, "synth5/f2l/toy")
    assert first[1:] != draw_trials(cls, 6, 4, "synth5/f2l/toy")[1:]
    assert first[1:] != draw_trials(cls, 6, 3, "synth5/f2f/toy")[1:]


def test_trials_are_prefix_stable() -> None:
    for cls in (toy(TOY_SPACE), METHODS.get("gkd"), METHODS.get("kd")):
        eight = draw_trials(cls, 8, 0, "synth5/f2l/x")
        assert draw_trials(cls, 4, 0, "synth5/f2l/x") == eight[:4]
        assert draw_trials(cls, 1, 0, "synth5/f2l/x") == eight[:1]


def test_two_hundred_trials_keep_ranges_and_types() -> None:
    for name in SHIPPED:
        cls = METHODS.get(name)
        trials = draw_trials(cls, 200, 0, f"synth5/f2l/{name}")
        if not tunable(cls):
            continue
        assert len(trials) == 200, name
        for trial in trials[1:]:
            for key, dist in cls.search_space.items():
                assert dist.contains(trial[key]), (name, key, trial[key])
                assert type(trial[key]) is type(cls.defaults[key]), (name, key)
            cls.check_hparams(trial)


def test_trials_are_distinct_and_a_small_finite_space_gives_what_it_has() -> None:
    cls = toy({"mode": Choice(("a", "b", "c"))})
    trials = draw_trials(cls, 10, 0, "s")
    assert sorted(t["mode"] for t in trials) == ["a", "b", "c"]
    assert draw_trials(cls, 10, 0, "s")[:2] == draw_trials(cls, 2, 0, "s")
    # the default "a" is in the space, so only three settings exist; with "z" outside it there would be four
    other = toy({"mode": Choice(("b", "c"))})
    assert len(draw_trials(other, 10, 0, "s")) == 3
    many = draw_trials(toy(TOY_SPACE), 50, 0, "s")
    assert len({tuple(sorted(t.items())) for t in many}) == 50


def test_a_method_without_a_space_gives_one_trial_whatever_the_count() -> None:
    cls = METHODS.get("student-only")
    assert not tunable(cls) and tunable(METHODS.get("kd"))
    assert draw_trials(cls, 8, 0, "s") == [{}]
    plain = toy({}, defaults={"weight": 2.0})
    assert draw_trials(plain, 5, 0, "s") == [{"weight": 2.0}]


@pytest.mark.parametrize("count", [0, -2, 1.5, "x", "0", True, None, "2.0"])
def test_bad_trial_counts_give_one_line(count: object) -> None:
    with pytest.raises(UserError) as err:
        draw_trials(METHODS.get("kd"), count, 0, "s")
    assert str(err.value) == f"--trials must be a positive integer, got {count!r}"


def test_trial_count_from_the_command_line() -> None:
    assert check_trial_count("4") == 4 and check_trial_count(" 8 ") == 8 and check_trial_count(1) == 1


def test_a_bad_space_fails_before_any_trial_is_drawn() -> None:
    with pytest.raises(UserError, match=r"^method\.toy\.missing: the search space names"):
        draw_trials(toy({"missing": Uniform(0.0, 1.0)}), 3, 0, "s")
