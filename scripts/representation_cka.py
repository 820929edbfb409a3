"""How closely each distilled student's representation matches the teacher's, per domain: linear CKA (Kornblith et
al., ICML 2019) between the teacher's and the student's final-LayerNorm patch tokens on every domain's validation
images (each token one sample). It tells where a method's out-of-domain score is won or lost: in the representation
(low CKA on the targets) or in what the task learning makes of it (high CKA, low mIoU).

Reads the stage checkpoints (``stage-*.pt``, kept next to the committed records but not committed) of a synth5
results directory made on this machine, and the cached teacher. Prints a Markdown table: mean ± std over seeds.

    python scripts/representation_cka.py results/synth5-quick --pair f2l --methods student-only,cwd,gkd
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from kdbench.data.domains import get_domain
from kdbench.data.synthetic import to_float
from kdbench.engine.runtime import resolve_runtime
from kdbench.launch import Workspace
from kdbench.models.zoo import PAIRS
from kdbench.resolve import resolve_config


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two sample × feature matrices (any widths): ||XᵀY||² / (||XᵀX|| · ||YᵀY||), centred."""
    x = (x - x.mean(0)).double()
    y = (y - y.mean(0)).double()
    return float((x.T @ y).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


@torch.inference_mode()
def patch_tokens(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images, with_logits=False)
    return out.patch_tokens.reshape(-1, out.patch_tokens.shape[-1])


def student_checkpoint(run: Path, method: str) -> Path | None:
    """The backbone a method's task head reads: GKD's end of stage 1 (the same weights as its end), else the end."""
    for name in ("stage-domain-agnostic.pt", "stage-train.pt", "stage-task.pt"):
        if (run / name).is_file():
            return run / name
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--pair", default="f2l")
    parser.add_argument("--methods", default="student-only,kd,cwd,gkd,gkd-single-stage")
    args = parser.parse_args()
    options = {"suite": "synth5", "methods": None, "pairs": None, "benchmarks": None, "seeds": None, "preset": None,
               "out": None, "device": "cpu"}
    cfg, suite = resolve_config(None, options, [])
    ws = Workspace(cfg, suite, resolve_runtime("cpu", "off", threads=1), echo=lambda _: None)
    pair = PAIRS.get(args.pair)
    rows = []
    for bench in suite.benchmarks.values():
        teacher = ws.teacher(pair, bench.source).eval()
        images = {d: to_float(ws.split(d, "val").images) for d in bench.domains}
        reference = {d: patch_tokens(teacher, x) for d, x in images.items()}
        for method in args.methods.split(","):
            for run in sorted((args.results / suite.name / bench.name / pair.name / method).glob("seed*")):
                path = student_checkpoint(run, method)
                if path is None or not (run / "done").is_file():
                    continue
                seed = int(run.name.split("-")[0].removeprefix("seed"))
                student = ws.student(pair, len(get_domain(bench.source).classes), seed)
                student.load_state_dict(torch.load(path, map_location="cpu")["student"])
                student.eval()
                for domain, x in images.items():
                    rows.append({"benchmark": bench.name, "method": method, "seed": seed,
                                 "role": "ID" if domain == bench.source else "OOD",
                                 "cka": linear_cka(reference[domain], patch_tokens(student, x))})
    frame = pd.DataFrame(rows)
    if frame.empty:
        print(f"no runs with stage checkpoints under {args.results}", file=sys.stderr)
        return 1
    per_seed = frame.groupby(["benchmark", "method", "seed", "role"]).cka.mean().reset_index()
    table = per_seed.groupby(["method", "benchmark", "role"]).cka.agg(["mean", "std"]).reset_index()
    table["cell"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(table["mean"], table["std"].fillna(0.0), strict=True)]
    wide = table.pivot_table(index="method", columns=["benchmark", "role"], values="cell", aggfunc="first")
    order = [b for b in suite.benchmarks if b in wide.columns.get_level_values(0)]
    wide = wide.reindex(columns=[(b, r) for b in order for r in ("ID", "OOD")])
    wide = wide.reindex([m for m in args.methods.split(",") if m in wide.index])
    header = "| method | " + " | ".join(f"{b} {r}" for b, r in wide.columns) + " |"
    print(header)
    print("|---" * (len(wide.columns) + 1) + "|")
    for method, row in wide.iterrows():
        print(f"| {method} | " + " | ".join(str(v) for v in row.values) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
