#!/usr/bin/env bash
# The prepared GPU check: what is still to be measured on one H100/H200, in one call of under 8 minutes.
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

# 1: int8 transformer weights as the server places them on a 24 GB card without FP8 units (RTX 3090): bf16 Fast for
#    reference, quantised layer by layer from the CPU, Fast all on the GPU, then host offload under a 24 GiB cap
timeout 230 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 200 \
  --phases int8 > "$out/run1.log" 2>&1
echo "run 1 exit $?" >> "$out/exit.txt"
# 2: the attention backends in bf16, all on the GPU (Best's exact forward)
timeout 130 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 100 \
  --phases attention > "$out/run2.log" 2>&1
echo "run 2 exit $?" >> "$out/exit.txt"
# 3: naming the layers (bf16, all on the GPU); FP8's kernels for every linear shape (per-row everywhere, then the
#    server's scales); FP8 all on the GPU, Fast eager
#    (FP8 compiled is left out: its first compile alone takes about 130 s; --phases fp8,fp8compile runs it)
timeout 120 python3 scripts/gpu_bench.py --arch "${ARCH:-full}" --out "$out" --budget-s 90 \
  --phases naming,fp8check,fp8,presets --presets fast > "$out/run3.log" 2>&1
echo "run 3 exit $?" >> "$out/exit.txt"
tail -n 40 "$out/results.jsonl"
