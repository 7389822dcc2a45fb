"""Cross-layer Grams on pooled grids with an odd side: the index path against the
stride-2 path, forward and backward, in one process.

    .venv/bin/python -m benchmarks.pooled [--size 512] [--rounds 25]

A picture of 512×341 px has maps of 341 rows at conv1 and 85 at conv3, which the
network's pooling halves to 170 and 42 (the odd last row dropped). The chain's pairs
(conv1_2, conv2_1) and (conv3_4, conv4_1) then read the deeper map upsampled to an odd
size. Both ways of forming their cross-layer Gram are timed on random maps of those
shapes, turn about (the first three rounds untimed), with and without the blur, shift
−1 as in the chain presets; prints the medians in milliseconds. The block cache is used
where it is built, as in a run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from neuralart import cpucache
from neuralart.layers import LAYERS
from neuralart.statistics import cross_gram, nearest_index

PAIRS = (("conv1_2", "conv2_1"), ("conv3_4", "conv4_1"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pooled")
    p.add_argument("--size", type=int, default=512, help="the long edge; the short is 2/3")
    p.add_argument("--rounds", type=int, default=25)
    args = p.parse_args(argv)
    state = cpucache.enable()
    height, width = args.size * 2 // 3, args.size
    print(f"{height}×{width} px, {torch.get_num_threads()} threads, block cache {state}")
    print("| pair | blur | index path, ms | stride-2 path, ms | ratio |")
    print("|---|---|---|---|---|")
    for big, small in PAIRS:
        one, other = LAYERS[big], LAYERS[small]
        grid_a, grid_b = one.grid(height, width), other.grid(height, width)
        a = torch.rand(1, one.channels, *grid_a, requires_grad=True)
        b = torch.rand(1, other.channels, *grid_b, requires_grad=True)
        index = (nearest_index(grid_a[0], grid_b[0]), nearest_index(grid_a[1], grid_b[1]))
        weight = torch.randn(1, one.channels, other.channels)
        for blur in (False, True):
            times: dict[str, list[float]] = {"index": [], "pooled": []}
            for round_ in range(args.rounds + 3):
                for name, given in (("index", index), ("pooled", None)):
                    start = time.perf_counter()
                    g = cross_gram(a, b, -1.0, blur, index=given)
                    torch.autograd.grad(g, (a, b), weight)
                    if round_ >= 3:
                        times[name].append(time.perf_counter() - start)
            slow, fast = (statistics.median(times[k]) * 1000 for k in ("index", "pooled"))
            print(
                f"| {big}@{grid_a[0]}×{grid_a[1]} – {small}@{grid_b[0]}×{grid_b[1]} "
                f"| {'yes' if blur else 'no'} | {slow:.1f} | {fast:.1f} | {fast / slow:.2f} |"
            )


if __name__ == "__main__":
    main()
