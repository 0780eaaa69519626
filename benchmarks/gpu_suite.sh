#!/usr/bin/env bash
# One device run, prepared to fit a lent H100/H200 session (budget: under 8 minutes):
#   bash benchmarks/gpu_suite.sh OUT.json            # on the GPU machine
#   bash benchmarks/gpu_suite.sh OUT.json --dry-run  # every size shrunk, on a CPU (no install)
# Installs the package with the CUDA JAX wheels of requirements-gpu.txt (skipped in a dry
# run), then runs benchmarks/gpu_suite.py, which writes one JSON of every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: gpu_suite.sh OUT.json [--dry-run]"
out="" dry=""
for arg in "$@"; do  # --dry-run may come first or last; anything else starting with - is a mistake
  case "$arg" in
    --dry-run) dry="--dry-run" ;;
    -*) echo "gpu_suite.sh: unknown option $arg; $usage" >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { echo "gpu_suite.sh: two outputs ($out, $arg); $usage" >&2; exit 2; }; out="$arg" ;;
  esac
done
[[ -n "$out" ]] || { echo "gpu_suite.sh: no OUT.json given; $usage" >&2; exit 2; }
start=$(date +%s)
if [[ -z "$dry" ]]; then
  python3 -m pip install -q -e . -r requirements-gpu.txt
  python3 -c "import jax; assert jax.default_backend() == 'gpu', jax.devices()"
else
  export JAX_PLATFORMS=cpu
fi
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1
python3 benchmarks/gpu_suite.py --out "$out" $dry
echo "gpu_suite: $(( $(date +%s) - start )) s end to end"
