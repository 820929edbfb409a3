"""The teacher-output cache's gain: one training step with the teacher looked up in its cached table against the
same step running the teacher, timed side by side in one process (synth5 F2L pair, 32 px, batch 32, fp32, the
CPU's threads as torch defaults; random weights: speed does not depend on them).

Run: ``.venv/bin/pytest benchmarks/test_teacher_cache.py --benchmark-enable -s`` (figures: docs/performance.md).
"""

import statistics

import pytest
import torch

from kdbench.data.domains import get_domain
from kdbench.data.loaders import INPUT_IDS, FixedInputs
from kdbench.data.synthetic import make_split
from kdbench.engine.teacher_cache import TeacherCache
from kdbench.engine.trainer import method_step
from kdbench.method import Batch
from kdbench.testing.timing import alternate, medians
from kdbench.testing.workloads import StepWorkload, step_workload

SIZE, BATCH, IMAGES, ROUNDS = 32, 32, 1024, 20
STEPS = [("kd", "train"), ("cwd", "train"), ("fitnet", "train"), ("vitkd", "train"), ("proteus", "train"),
         ("gkd", "domain-agnostic")]


@pytest.fixture(scope="module")
def inputs() -> FixedInputs:
    return FixedInputs(make_split(get_domain("game"), "train", IMAGES, SIZE).images, torch.device("cpu"))


@pytest.mark.parametrize(("method_name", "stage_name"), STEPS, ids=[f"{m}-{s}" for m, s in STEPS])
def test_cached_teacher_step_against_live_teacher_step(benchmark, inputs, method_name, stage_name):
    work = step_workload(method_name, "f2l", stage_name, SIZE, BATCH, classes=6)
    ids = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))[:BATCH]
    batch = Batch(images=inputs.batch(ids), labels=work.batch.labels, meta={INPUT_IDS: ids})
    table = TeacherCache(None, work.runtime, notify=lambda _: None).table(
        work.method.teacher, {"model": "synth-vit-b"}, inputs, work.method.teacher_taps(work.method.hp))
    live = StepWorkload(work.method, work.stage, batch, work.cfg, work.runtime, method_step(work.method, work.stage))
    cached = StepWorkload(work.method, work.stage, batch, work.cfg, work.runtime,
                          method_step(work.method, work.stage, table))
    times = alternate({"live": live.run, "cached": cached.run}, rounds=ROUNDS)
    median = medians(times)
    ratio = median["cached"] / median["live"]
    benchmark.extra_info.update({"live_ms": round(1e3 * median["live"], 1),
                                 "cached_ms": round(1e3 * median["cached"], 1), "ratio": round(ratio, 3),
                                 "threads": torch.get_num_threads(),
                                 "live_spread_ms": round(1e3 * statistics.pstdev(times["live"]), 1)})
    print(f"\n{method_name} {stage_name}: live {1e3 * median['live']:.1f} ms, cached {1e3 * median['cached']:.1f} ms "
          f"per step, ratio {ratio:.3f} ({torch.get_num_threads()} threads, median of {ROUNDS})")
    benchmark.pedantic(cached.run, rounds=3, warmup_rounds=1)
