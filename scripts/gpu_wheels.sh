#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh installs on a GPU machine that lacks them, built here into .whl/ (gitignored; the
# device tool sends it with `carry: [".whl"]`). The GPU machine of the 2026-12-04 lease had Python 3.12 with its
# own torch, torchvision and transformers, but no segmentation-models-pytorch or submitit, and an older timm.
#
#   scripts/gpu_wheels.sh [--no-timm]     --no-timm: leave timm out and use the machine's own
#
# GPU_WHEELS_PYTHON (default 3.12) is the GPU machine's Python version. Prints the wheels and their size in MiB,
# and the tracked tree's, since the tree and the carried paths together must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
python_version=${GPU_WHEELS_PYTHON:-3.12}
packages=(segmentation-models-pytorch==0.6.0 submitit timm==1.0.31)
case ${1:-} in
  "") ;;
  --no-timm) packages=("${packages[@]:0:2}") ;;
  *) echo "gpu_wheels: unknown option '$1' (valid: --no-timm)"; exit 2 ;;
esac
pip=${PIP:-.venv/bin/pip}
[ -x "$pip" ] || pip="python3 -m pip"
staging=$(mktemp -d .whl.XXXXXX)
trap 'rm -rf "$staging"' EXIT
$pip download -q --no-deps --only-binary=:all: --python-version "$python_version" -d "$staging" "${packages[@]}"
$pip wheel -q --no-deps -w "$staging" .
rm -rf .whl
mv "$staging" .whl
trap - EXIT
ls -1 .whl
du -sm .whl | awk '{print "wheels: " $1 " MiB"}'
git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {printf "tracked tree: %.1f MiB\n", s / 2^20}'
