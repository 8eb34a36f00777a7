#!/usr/bin/env bash
# The prepared GPU check: what is still to be measured on one H100/H200, in one call of under 8 minutes.
# Rows go to $OUT/results.jsonl (and each process's log beside it); see docs/benchmarks.md for the earlier runs.
#   OUT=/some/dir bash scripts/gpu_session.sh      (ARCH=tiny: the same calls with the tiny model, on any machine)
# Wheels in .whl/ (if any) are installed to /tmp/site first, for a machine that cannot reach a package index.
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" 2>&1
python3 -c 'import torch, diffusers, transformers, torchao; print(torch.__version__, diffusers.__version__, transformers.__version__, torchao.__version__)' > "$out/versions.txt" 2>&1

# 1: FP8's kernels for every linear shape (per-row everywhere, then the server's scales); FP8 reached as a 24 GB card
#    reaches it; the 24 GB card: host offload twice, then diffusers' model offload (if time is left); the attention
#    backends (with FP8 linear layers by then; only the attention differs), if time is left
timeout 260 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 200 \
  --phases fp8check,fp8staged,card24,attention > "$out/run1.log" 2>&1
echo "run 1 exit $?" >> "$out/exit.txt"
# 2: the 16 GB card (a process of its own: group offload pins host memory): the int8 text encoder placed whole, its
#    caption and Fast end to end (bf16 streamed was measured before: docs/benchmarks.md)
timeout 210 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 150 \
  --phases card16int8 --caption-probe-tokens 16 > "$out/run2.log" 2>&1
echo "run 2 exit $?" >> "$out/exit.txt"
tail -n 40 "$out/results.jsonl"
