#!/usr/bin/env bash
# One device run, prepared to fit a lent H100/H200 session (budget: under 8 minutes):
#   bash benchmarks/gpu_suite.sh OUT.json            # on the GPU machine
#   bash benchmarks/gpu_suite.sh OUT.json --dry-run  # every size shrunk, on a CPU
# Installs the package with the CUDA JAX wheels of requirements-gpu.txt (skipped in a dry
# run), then runs benchmarks/gpu_suite.py, which writes one JSON of every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: gpu_suite.sh OUT.json [--dry-run]}"
shift
start=$(date +%s)
if [[ "${1:-}" != "--dry-run" ]]; then
  python3 -m pip install -q -e . -r requirements-gpu.txt
  python3 -c "import jax; assert jax.default_backend() == 'gpu', jax.devices()"
else
  export JAX_PLATFORMS=cpu
fi
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1
python3 benchmarks/gpu_suite.py --out "$out" "$@"
echo "gpu_suite: $(( $(date +%s) - start )) s end to end"
