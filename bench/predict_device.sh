#!/usr/bin/env bash
# One device session: the CUDA test, then GPU and CPU figures for bench/predict.py
# (docs/predict.md quotes them). Needs the nibabel/pydicom/monai wheels in .whl/.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp}
nvidia-smi -L
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_predict.py -k "cuda or exact" 2>&1 | tail -3
b() { echo "== $*"; timeout 100 python3 bench/predict.py "$@"; }
b --device cuda --repeats 5 --json "$OUT/gpu_640.json"
b --device cuda --size 512 --batch-size 50 --repeats 5 --json "$OUT/gpu_512.json"
b --device cpu --threads 2 --shape 512 512 10 --repeats 1 --json "$OUT/cpu2_640_10sl.json"
b --device cpu --threads 2 --shape 512 512 10 --repeats 1 --backend onnx --json "$OUT/cpu2_onnx_640_10sl.json"
b --device cpu --threads 2 --shape 512 512 10 --size 256 --repeats 1 --backend onnx --json "$OUT/cpu2_onnx_256_10sl.json"
