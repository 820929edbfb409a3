#!/usr/bin/env bash
# The GPU checks (issue 21) as one script for a machine with an NVIDIA GPU, each part under its own time limit and
# all of them under one budget, output kept under $OUT (default /tmp/gpu-check):
#   gpu_check.log      everything printed
#   mfu.json           benchmarks/test_mfu.py, eager (pytest-benchmark JSON; the figures are in extra_info)
#   profile.txt        scripts/profile_step.py: where a GKD stage 1b step's GPU time goes
#   pytest.log         the test suite with CUDA visible
#   smoke-l.json, smoke-b.json   scripts/dg5_gpu_smoke.py for the two F2L pairs
#   mfu-compiled.json  benchmarks/test_mfu.py, torch.compile
#   speed.json         benchmarks/test_speed_options.py's GPU arms (compile aside: mfu-compiled has it)
#
#   scripts/gpu_check.sh [PART ...]     PART: env mfu profile tests smoke compiled speed (default: all, that order)
#
# GPU_CHECK_BUDGET_S (default 540) bounds the whole; a part that would start with under 20 s left is skipped.
# Packages the machine lacks (segmentation-models-pytorch, submitit; timm where the tree's size allows) and kdbench
# itself travel as wheels in .whl/, which scripts/gpu_wheels.sh builds (docs/performance.md, "On a GPU").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET_S:-540}
START=$(date +%s)
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 KDBENCH_HEARTBEAT_S=30 KDBENCH_BENCH_ROUNDS=${KDBENCH_BENCH_ROUNDS:-5}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: the wheels in .whl/ did not install"; exit 1; }
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
fi

part() {  # NAME LIMIT_S COMMAND...: COMMAND (a function of this script, too) under min(LIMIT_S, what is left of
          # the budget); SIGINT first, so that pytest prints what it has
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START) - 5))
  if ((left < 20)); then echo "== $name: skipped, ${left} s of the budget left"; return; fi
  ((limit > left)) && limit=$left
  echo "== $name: start $(date +%T), limit ${limit} s"
  local t0=$(date +%s)
  timeout -s INT -k 15 "$limit" bash -c '"$@"' _ "$@"
  echo "== $name: exit $? after $(($(date +%s) - t0)) s"
}

bench() {  # JSON_NAME PYTEST_ARGS...: a benchmark file with its figures printed and kept
  local json=$1
  shift
  python3 -m pytest -q -s -p no:cacheprovider --benchmark-enable --benchmark-json "$OUT/$json" "$@"
}

env_report() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  python3 - <<'EOF'
import importlib
import torch
for name in ("torch", "timm", "transformers", "segmentation_models_pytorch", "submitit", "numpy", "kdbench"):
    module = importlib.import_module(name)
    print(f"{name} {getattr(module, '__version__', '?')} {module.__file__}")
print("cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0), "capability",
      torch.cuda.get_device_capability(0), "bf16", torch.cuda.is_bf16_supported(), "cpus", torch.get_num_threads())
from kdbench.method import METHODS
print("methods", len(list(METHODS.names())))
EOF
}

smoke() {  # PAIR BENCHMARKS JSON_NAME: the rows of the benchmarks finished are kept, also when cut off
  local dir="/tmp/dg5-${3%.json}"
  rm -rf "$dir"
  trap 'cp "$dir/smoke.json" "$OUT/$3" 2>/dev/null' EXIT
  python3 scripts/dg5_gpu_smoke.py --out "$dir" --pairs "$1" --benchmarks "$2" --steps 10
}

export OUT
export -f env_report bench smoke

run_part() {
  case $1 in
    env) part env 60 env_report ;;
    mfu) part mfu 90 bench mfu.json benchmarks/test_mfu.py -k eager ;;
    profile) part profile 60 python3 scripts/profile_step.py --out "$OUT/profile.txt" ;;
    # -v: every test's outcome is written as it ends, so a cut-off run still names its failures; into a file, not
    # a pipe, which a process a test left behind could hold open
    tests) part tests 220 bash -c "python3 -m pytest -v -n 15 --timeout 150 -rfE -p no:cacheprovider \
             >'$OUT/pytest.log' 2>&1; grep -E 'FAILED|ERROR|passed|failed' '$OUT/pytest.log' | tail -40" ;;
    smoke) part smoke-l 130 smoke f2l-dinov2-l-deit-b gtav,potsdam smoke-l.json
           part smoke-b 60 smoke f2l-dinov2-b-deit-s gtav smoke-b.json ;;
    compiled) part compiled 150 bench mfu-compiled.json benchmarks/test_mfu.py -k compiled ;;
    speed) part speed 150 bench speed.json benchmarks/test_speed_options.py -k "not test_compile" ;;
    *) echo "gpu_check: unknown part '$1' (env mfu profile tests smoke compiled speed)"; exit 2 ;;
  esac
}

for p in "${@:-env mfu profile tests smoke compiled speed}"; do
  for q in $p; do run_part "$q"; done
done
echo "== all parts done after $(($(date +%s) - START)) s"
