"""Runs per hour on a fixed slice of the synth5 reference matrix under each worker layout, caches warm: one process
using every core (``--launcher inline``) against one single-threaded process per core (``--launcher local``),
each the whole ``kdbench run`` command as a user types it, in turn, round after round. The slice: quick preset,
game2real, F2L, student-only / kd / cwd / fitnet × seeds 0, 1 (8 runs and the teacher row).

Some minutes per round on 2 cores, so it only runs when asked (``KDBENCH_BENCH_LAYOUT_ROUNDS``, default 1):

    KDBENCH_BENCH_LAYOUT=1 .venv/bin/pytest benchmarks/test_sweep_layout.py --benchmark-enable -s

It uses the pretraining cache of ``KDBENCH_CACHE`` (filled first by a 1-step run of the slice, untimed).
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLICE = ["run", "--benchmarks", "game2real", "--pairs", "f2l", "--methods", "student-only,kd,cwd,fitnet",
         "--seeds", "0,1", "--preset", "quick", "--device", "cpu"]
RUNS = 9
CORES = len(os.sched_getaffinity(0))
LAYOUTS = {
    f"inline-1x{CORES}": ["--launcher", "inline", "--set", f"train.threads={CORES}"],
    f"local-{CORES}x1": ["--launcher", "local", "--set", f"launcher.workers={CORES}", "--set", "train.threads=1"],
}


def kdbench(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kdbench", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return time.perf_counter() - start


@pytest.mark.skipif(os.environ.get("KDBENCH_BENCH_LAYOUT") != "1", reason="set KDBENCH_BENCH_LAYOUT=1 to run")
def test_runs_per_hour_by_worker_layout(benchmark, tmp_path):
    kdbench(*SLICE, "--set", "train.steps=1", "--out", str(tmp_path / "warm"))
    rounds = int(os.environ.get("KDBENCH_BENCH_LAYOUT_ROUNDS", "1"))
    walls: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for r in range(rounds):
        for name, options in LAYOUTS.items():
            walls[name].append(kdbench(*SLICE, *options, "--out", str(tmp_path / f"{name}-{r}")))
    per_hour = {name: RUNS * 3600 / statistics.median(w) for name, w in walls.items()}
    for name, w in walls.items():
        print(f"\n{name}: {', '.join(f'{s:.0f} s' for s in w)} for {RUNS} runs -> {per_hour[name]:.0f} runs/hour")
    names = list(LAYOUTS)
    print(f"{names[1]} / {names[0]} runs per hour: {per_hour[names[1]] / per_hour[names[0]]:.2f}")
    benchmark.extra_info.update({"walls_s": {k: [round(s, 1) for s in v] for k, v in walls.items()},
                                 "runs_per_hour": {k: round(v) for k, v in per_hour.items()}, "cores": CORES})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert Path(tmp_path).is_dir()
