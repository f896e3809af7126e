#!/usr/bin/env bash
# One device session for training: the CUDA training tests, then bench/train.py at 640² on
# the GPU, eager (both U-Nets + the 10-vs-40-case RSS check) and torch.compile (unet).
# Needs the monai wheel in .whl/ (the device image has torch but not MONAI).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp}
nvidia-smi -L
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k cuda 2>&1 | tail -4
timeout 200 python3 bench/train.py --device cuda --size 640 --batch-size 32 --steps 20 \
  --workers 8 --rss-size 256 --work /tmp/bench 2>&1 | tee "$OUT/train_eager.txt"
timeout 240 python3 bench/train.py --device cuda --size 640 --batch-size 32 --steps 30 \
  --workers 8 --compile --models unet --skip-rss --work /tmp/bench 2>&1 | tee "$OUT/train_compile.txt"
