"""How much L-BFGS history buys: the objective after N iterations and the time taken.

    .venv/bin/python -m benchmarks.history [--size 256] [-n 200] [--histories 100,50,25]

For classic and chain-blurred on tubingen.jpg × starry_night.jpg (``benchmarks.images``:
../shared/images, or the repository's stand-ins where that folder is absent), runs
the same seeded optimisation with each history length and prints a Markdown table of the
objective at 50, 100 and N iterations with the seconds taken; appended to BENCHMARKS.md
unless ``--no-append``. The paper's setting is 100; each stored step costs two passes
over two picture-sized vectors per iteration, which on two CPU cores is about a tenth of
an iteration at any size.
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import datetime, timezone
from typing import Any

import torch

from benchmarks.images import picture
from benchmarks.report import BENCHMARKS, publish
from neuralart.presets import resolve
from neuralart.transfer import NetworkCache, transfer

CONTENT = picture("tubingen.jpg")
STYLE = picture("starry_night.jpg")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.history")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("-n", "--iterations", type=int, default=200)
    p.add_argument("--histories", default="100,50,25")
    p.add_argument("--presets", default="classic,chain-blurred")
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    checkpoints = sorted({50, 100, args.iterations} & set(range(1, args.iterations + 1)))
    lines = [
        f"## L-BFGS history at {args.size} px "
        f"({datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"`python -m benchmarks.history {' '.join(sys.argv[1:] if argv is None else argv)}`"
        f" on {platform.machine()} CPU, {torch.get_num_threads()} threads; {CONTENT.name} × "
        f"{STYLE.name}, seed 0. Objective (each preset's own) at each iteration "
        "shown, and the seconds to get there.",
        "",
        "| preset | history | " + " | ".join(f"at iteration {c}" for c in checkpoints) + " |",
        "|---|---|" + "---|" * len(checkpoints),
    ]
    cache = NetworkCache(torch.device("cpu"))
    for preset in args.presets.split(","):
        for history in (int(h) for h in args.histories.split(",")):
            config, _ = resolve(
                preset,
                {
                    "size": args.size,
                    "seed": 0,
                    "device": "cpu",
                    "optimizer": {"iterations": args.iterations, "history": history, "levels": 1},
                },
            )
            seen: dict[int, tuple[float, float]] = {}

            def record(event: Any, seen: dict[int, tuple[float, float]] = seen) -> None:
                if event.iteration in checkpoints:
                    seen[event.iteration] = (event.loss, event.elapsed)

            transfer(
                CONTENT,
                [STYLE],
                config,
                network=cache.get(config),
                callback=record,
            )
            cells = [f"{seen[c][0]:.4g} ({seen[c][1]:.0f} s)" for c in checkpoints]
            lines.append(f"| {preset} | {history} | " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    publish(text, None if args.no_append else BENCHMARKS)


if __name__ == "__main__":
    main()
