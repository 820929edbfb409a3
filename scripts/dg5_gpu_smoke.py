"""Run every dg5 benchmark for a few steps with each real-size pair on the fixture datasets; report step times and
peak memory (issue 5 §7). Meant for a GPU machine; works on a CPU with ``--tiny`` (tiny models, minutes).

The fixtures are the tiny on-disk copies of every dataset (``kdbench.testing.fixtures``); the weights are random,
written in each model's official file format (``kdbench.testing.weights``), so this exercises the whole real path:
data discovery and decoding, the paper's training pipeline at 512 px crops, official-format weight loading with
patch 14 -> 16 resampling, the Mask2Former head, GKD's stages and a single-stage baseline, and the gkd-512
sliding-window evaluation. Numbers are per process, with the ``paper`` preset's settings except the step counts
(and stage 1b's batch, per GPU: the paper's 128 on 4 GPUs is 32 each).

    python scripts/dg5_gpu_smoke.py --out /tmp/dg5-smoke            # real-size pairs (a GPU)
    python scripts/dg5_gpu_smoke.py --out /tmp/dg5-smoke --tiny     # tiny twins, CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from kdbench.models.zoo import MODELS, PAIRS
from kdbench.testing.fixtures import make_all
from kdbench.testing.weights import write_official_weights
from kdbench.testing.zoo_weights import write_weights

PAIR_METHODS = {"f2f-dinov2-l-b": "gkd,cwd", "f2f-dinov2-b-s": "gkd,cwd", "f2l-dinov2-l-deit-b": "gkd,cwd",
                "f2l-dinov2-b-deit-s": "gkd,cwd", "f2l-dinov2-b-resnet50": "cwd", "f2f-eva02-l-b": "gkd,cwd",
                "f2f-eva02-b-s": "gkd,cwd"}


def random_weights(model: str, path: Path) -> Path:
    """``model``'s random weights in its official file layout (timm-built families through the zoo's writer)."""
    spec = MODELS.get(model)
    return write_weights(spec, path) if spec.backend == "timm" else write_official_weights(model, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps of every stage and of the teacher head")
    parser.add_argument("--distill-batch", type=int, default=32, help="stage 1 batch per process (paper: 128 / 4)")
    parser.add_argument("--tiny", action="store_true", help="tiny twins of the pairs and heads (CPU)")
    parser.add_argument("--pairs", default=",".join(PAIR_METHODS))
    parser.add_argument("--benchmarks", default="gtav,citys2acdc,potsdam")
    args = parser.parse_args()
    data_root, cache, weights = args.out / "data", args.out / "prepared", args.out / "weights"
    make_all(data_root, cache)
    pairs = {"tiny-real-f2l": "gkd,cwd"} if args.tiny else {p: PAIR_METHODS[p] for p in args.pairs.split(",")}
    rows = []
    for pair_name, methods in pairs.items():
        pair = PAIRS.get(pair_name)
        files = {m: random_weights(m, weights / f"{m}.pth") for m in (pair.teacher, pair.student)}
        for bench in args.benchmarks.split(","):
            out = args.out / "results"
            command = [sys.executable, "-m", "kdbench", "run", "--suite", "dg5", "--preset", "paper",
                       "--data-root", str(data_root), "--benchmarks", bench, "--pairs", pair_name,
                       "--methods", methods, "--seeds", "0", "--out", str(out),
                       "--set", f"data.cache_dir={cache}", "--set", "data.workers=2",
                       "--set", f"train.steps={args.steps}", "--set", f"pretrain.head_steps={args.steps}",
                       "--set", "train.checkpoint_every=1000000", "--set", "train.log_every=5"]
            for stage in ("domain-agnostic", "task-agnostic"):
                command += ["--set", f"train.stages.{stage}.steps={args.steps}",
                            "--set", f"train.stages.{stage}.batch_size={args.distill_batch}",
                            "--set", f"train.stages.{stage}.epochs=null"]
            command += ["--set", "data.proxy_root=" + str(data_root / "cityscapes" / "leftImg8bit")]
            for model, path in files.items():
                command += ["--set", f"weights.{model}={path}"]
            if args.tiny:
                command += ["--set", "head=mask2former-tiny", "--set", "data.workers=0"]
            start = time.perf_counter()
            done = subprocess.run(command, check=False)
            rows += collect(out / "dg5" / bench / pair_name, pair_name, bench, done.returncode,
                            time.perf_counter() - start)
            (args.out / "smoke.json").write_text(json.dumps(rows, indent=1))  # after each: a cut-off keeps the rest
    print(table(rows))


def collect(folder: Path, pair: str, bench: str, code: int, wall: float) -> list[dict]:
    rows = []
    for records in sorted(folder.glob("*/*/records.jsonl")):
        lines = [json.loads(line) for line in records.read_text().splitlines()]
        first = lines[0]
        stages = {s["name"]: round(s["wall_s"] / max(1, s["steps"]), 3) for s in first.get("stages", [])}
        tests = [r for r in lines if r.get("split", "test") == "test"]
        rows.append({"pair": pair, "benchmark": bench, "method": first["method"], "device": first["device"],
                     "precision": first["precision"], "s_per_step": stages,
                     "peak_memory_gb": round(first["peak_memory_mb"] / 1024, 2),
                     "eval_images": sum(r["images"] for r in tests),
                     "eval_images_per_s": {r["domain"]: round(r["images"] / r["eval_s"], 2) for r in tests
                                           if r.get("eval_s")},
                     "wall_s": round(first["wall_s"], 1), "exit": code, "sweep_wall_s": round(wall, 1)})
    if not rows:
        rows.append({"pair": pair, "benchmark": bench, "method": "-", "exit": code, "sweep_wall_s": round(wall, 1)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| pair | benchmark | method | s/step per stage | eval images/s per domain (test) | peak GB | wall s "
             "| exit |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stages = ", ".join(f"{k} {v}" for k, v in r.get("s_per_step", {}).items())
        rates = ", ".join(f"{k} {v}" for k, v in r.get("eval_images_per_s", {}).items())
        lines.append(f"| {r['pair']} | {r['benchmark']} | {r['method']} | {stages} | {rates} "
                     f"| {r.get('peak_memory_gb', '-')} | {r.get('wall_s', '-')} | {r['exit']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
