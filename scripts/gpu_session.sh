#!/usr/bin/env bash
# The prepared GPU check: what is still to be measured on one H100/H200, in one call of under 10 minutes.
# Rows go to $OUT/results.jsonl (and each process's log beside it); see docs/benchmarks.md for the earlier runs.
#   OUT=/some/dir bash scripts/gpu_session.sh      (ARCH=tiny: the same calls with the tiny model, on any machine)
# Wheels in .whl/ (if any) are installed to /tmp/site first, for a machine that cannot reach a package index:
#   pip download --no-deps -d .whl diffusers==0.42.1 transformers==5.24.0 torchao==0.17.0 gguf==0.19.0 \
#     platformdirs importlib_metadata          (then run with carry [".whl"])
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" 2>&1
python3 -c 'import torch, diffusers, transformers, torchao, gguf, importlib.metadata as m; print(torch.__version__, diffusers.__version__, transformers.__version__, torchao.__version__, m.version("gguf"))' > "$out/versions.txt" 2>&1

# 1: all on the GPU: FP8's kernels for every linear shape (per-row everywhere, then the server's scales); FP8, then
#    FP8 + compilation, Fast twice (the first compiles: about 130 s for FP8)
timeout 320 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 260 \
  --phases fp8check,fp8,fp8compile > "$out/run1.log" 2>&1
echo "run 1 exit $?" >> "$out/exit.txt"
# 2: the attention backends in bf16, all on the GPU (Best's exact forward)
timeout 130 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 100 \
  --phases attention > "$out/run2.log" 2>&1
echo "run 2 exit $?" >> "$out/exit.txt"
# 3: a GGUF Q8_0 transformer through the server's single-file loader: bf16 Fast for reference, the same weights packed
#    to Q8_0, Fast all on the GPU (host offload under a 24 GiB cap too, where the budget leaves time)
timeout 140 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 130 \
  --phases gguf --gguf-type q8_0 > "$out/run3.log" 2>&1
echo "run 3 exit $?" >> "$out/exit.txt"
tail -n 40 "$out/results.jsonl"
