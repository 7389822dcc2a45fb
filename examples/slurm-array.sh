#!/usr/bin/env bash
# Repaint a folder of photographs on a Slurm cluster, one part of the folder per array
# task, with neuralart installed where the jobs run (pip install . in this repository).
# Change IMAGES (and the painting) and submit from the repository: sbatch examples/slurm-array.sh
# Each task runs `neuralart transfer --shard auto`, which reads SLURM_ARRAY_TASK_ID and
# SLURM_ARRAY_TASK_COUNT; resubmitting the array finishes only the pictures still missing.
#SBATCH --job-name=neuralart
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=neuralart-%A_%a.log
set -euo pipefail

IMAGES=${IMAGES:-$HOME/photos}                 # the folder of photographs to repaint
PAINTING=${PAINTING:-examples/starry_night.jpg}
OUT=${OUT:-$IMAGES-repainted}

mkdir -p "$OUT"
neuralart transfer "$IMAGES" "$PAINTING" --preset chain-blurred --size 512 \
    --out-dir "$OUT" --shard auto --skip-existing --json
