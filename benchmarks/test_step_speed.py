"""Training-step and evaluation speed on the synth5 F2L pair (fp32, CPU threads as torch defaults).

Run: ``.venv/bin/pytest benchmarks --benchmark-enable`` (the README lists measured figures and the machine).
"""

import pytest
import torch

from kdbench.config import TrainConfig
from kdbench.data.domains import get_domain
from kdbench.data.loaders import StageData
from kdbench.data.synthetic import make_split
from kdbench.engine.evaluator import PROTOCOLS, evaluate
from kdbench.engine.runtime import resolve_runtime
from kdbench.engine.trainer import method_step, set_trainable, stage_groups, train_steps
from kdbench.method import METHODS, RunContext
from kdbench.models.segmentor import Segmentor
from kdbench.models.zoo import PAIRS
from kdbench.testing.workloads import segmentor as workload_segmentor

SIZE, BATCH = 32, 32


def segmentor(name: str) -> Segmentor:
    return workload_segmentor(name, SIZE, 6)


@pytest.fixture(scope="module")
def data():
    return StageData(make_split(get_domain("game"), "train", 256, SIZE), "urban", SIZE, torch.device("cpu"))


STEPS = [(m, "train") for m in ("student-only", "kd", "vanilla-kd", "cwd", "fitnet", "vitkd", "proteus", "afdcd")]
STEPS += [("gkd", "domain-agnostic"), ("gkd", "task"), ("gkd-single-stage", "train")]


@pytest.mark.parametrize(("method_name", "stage_name"), STEPS, ids=[f"{m}-{s}" for m, s in STEPS])
def test_train_step(benchmark, data, method_name, stage_name):
    torch.manual_seed(0)
    pair = PAIRS.get("f2l")
    context = RunContext(pair.kind, SIZE, 6, torch.device("cpu"))
    method = METHODS.get(method_name)(segmentor(pair.teacher).eval(), segmentor(pair.student), context)
    stage = next(st for st in method.stages() if st.name == stage_name)
    set_trainable(method, stage)
    cfg = TrainConfig(steps=1, batch_size=BATCH, log_every=10**9)
    runtime = resolve_runtime("cpu", "off")
    batches = data.batches(stage.data, BATCH, 0)

    step, groups = method_step(method, stage), stage_groups(method, stage, cfg)
    benchmark.pedantic(lambda: train_steps(step, groups, batches, 1, cfg, runtime, "bench"), rounds=10,
                       warmup_rounds=2)


def test_evaluation_throughput(benchmark):
    torch.manual_seed(0)
    model = segmentor("synth-deit-s").eval()
    split = make_split(get_domain("city"), "val", 128, SIZE)
    runtime = resolve_runtime("cpu", "off")
    benchmark.pedantic(lambda: evaluate(model, split, PROTOCOLS["whole"], 128, runtime), rounds=5, warmup_rounds=1)


def test_pretraining_batch_render(benchmark):
    from kdbench.data.synthetic import PretrainStream

    stream = PretrainStream("randomised", ("urban", "aerial"), SIZE, BATCH, seed=0,
                            exclude=[get_domain(d) for d in ("city", "night", "aerial-irrg")])
    benchmark.pedantic(stream.next_batch, rounds=10, warmup_rounds=1)


