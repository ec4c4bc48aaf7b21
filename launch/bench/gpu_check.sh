#!/usr/bin/env bash
# The GPU checks as one prepared run on a CUDA machine: the CUDA tests of the
# graph path and of the fused decoder (tests/policy/test_graph.py, test_run_memory.py,
# test_fused.py), the kernels of one network call, eager and fused (launch/bench/gpu_kernels.py
# --fused --chunk: also whole chunks profiled), then `dpctrl bench gpu` (arguments pass through).
# Logs and the report JSON go under $OUT (default runs/gpu); render the report into the
# results pages elsewhere with `dpctrl bench gpu --from-json <out>/bench_gpu.json --update-docs`.
# Wheels in .whl/ (zarr, gymnasium, ... for a machine without the package installed) are
# installed to /tmp/site first; the repository is imported as `dpctrl` through a link in /tmp/dpctrl-link.
set -u
out=${OUT:-runs/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 DPCTRL_TRACEBACK=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
mkdir -p /tmp/dpctrl-link && ln -sfn "$PWD" /tmp/dpctrl-link/dpctrl
export PYTHONPATH=/tmp/dpctrl-link:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -m pytest tests/policy/test_graph.py tests/policy/test_run_memory.py tests/policy/test_fused.py -q -p no:cacheprovider ${PYTEST_K:+-k "$PYTEST_K"} >"$out/pytest_graph.log" 2>&1
echo "pytest exit $?"; tail -n 25 "$out/pytest_graph.log"
python3 -m dpctrl.launch.bench.gpu_kernels --fused --chunk >"$out/kernels.txt" 2>&1; echo "kernels exit $?"; cat "$out/kernels.txt"
python3 -m dpctrl.launch.cli bench gpu --json "$out/bench_gpu.json" \
    --no-progress "$@" >"$out/bench_gpu.log" 2>&1
echo "bench exit $?"; tail -n 80 "$out/bench_gpu.log"
