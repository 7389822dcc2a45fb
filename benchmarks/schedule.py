"""Coarse to fine against one size, given the same wall time.

    .venv/bin/python -m benchmarks.schedule [--size 1024] [--preset classic] [-n 100]

Runs the automatic coarse-to-fine schedule at ``--size`` (N iterations at the first level,
half as many at each finer one), times it, then runs single-scale optimisation at the
full size for exactly that long (stopped on the clock, best picture kept). Both pictures,
as written (8-bit), are then scored with the same full-resolution objective. Content
tubingen.jpg and style starry_night.jpg (``benchmarks.images``: ../shared/images, or the
repository's stand-ins where that folder is absent). Prints a Markdown section
and appends it to BENCHMARKS.md (``--no-append`` to only print); writes both pictures to
out/schedule-*.png to look at.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any

import torch

from benchmarks.images import ROOT, picture
from benchmarks.report import BENCHMARKS, publish
from neuralart.images import image_to_tensor, load_image, resize_long_edge, save_image
from neuralart.losses import Objective
from neuralart.presets import resolve
from neuralart.transfer import NetworkCache, transfer

CONTENT = picture("tubingen.jpg")
STYLE = picture("starry_night.jpg")


class _OutOfTime(KeyboardInterrupt):
    """Stops the single-scale run on the clock (the loop keeps its best picture)."""


def score(network: Any, config: Any, image: Any, size: int) -> dict[str, float]:
    """The full-resolution objective of an output picture (as written, 8-bit)."""
    conv = network.convention
    content = conv.to_network(image_to_tensor(resize_long_edge(load_image(CONTENT), size)))
    style = conv.to_network(image_to_tensor(resize_long_edge(load_image(STYLE), size)))
    objective = Objective(
        network,
        config.content,
        config.style,
        content_image=content,
        style_images=[style],
        tv_weight=config.tv_weight,
        pixel_scale=conv.pixel_scale(),
    )
    with torch.no_grad():
        x = conv.to_network(image_to_tensor(image))
        terms = objective.terms(x)
        out = {k: float(v) for k, v in terms.items()}
        out["total"] = float(objective.total(terms))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.schedule")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--preset", default="classic")
    p.add_argument("-n", "--iterations", type=int, default=100)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cpu")
    base = {"size": args.size, "seed": 0, "device": "cpu"}
    scheduled, _ = resolve(
        args.preset, {**base, "optimizer": {"iterations": args.iterations, "levels": "auto"}}
    )
    single, _ = resolve(args.preset, {**base, "optimizer": {"iterations": 100_000, "levels": 1}})
    network = NetworkCache(device).get(scheduled)

    start = time.perf_counter()
    coarse = transfer(CONTENT, [STYLE], scheduled, network=network, device=device)
    budget = time.perf_counter() - start

    start = time.perf_counter()

    def on_the_clock(event: Any) -> None:
        if time.perf_counter() - start >= budget:
            raise _OutOfTime

    flat = transfer(CONTENT, [STYLE], single, network=network, device=device, callback=on_the_clock)
    flat_seconds = time.perf_counter() - start

    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    save_image(coarse.image, out / f"schedule-{args.preset}-{args.size}-coarse-to-fine.png")
    save_image(flat.image, out / f"schedule-{args.preset}-{args.size}-single-scale.png")
    s_coarse = score(network, scheduled, coarse.image, args.size)
    s_flat = score(network, single, flat.image, args.size)
    plan = ", ".join(f"{lv.iterations} at {lv.size[0]}×{lv.size[1]}" for lv in coarse.levels)
    w, h = coarse.image.size
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(
        [
            f"## Coarse to fine against one size, {args.preset} at {w}×{h} ({when})",
            "",
            f"`python -m benchmarks.schedule {argv_text}`".replace(" `", "`"),
            f"on {platform.machine()} CPU, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}; {CONTENT.name} × {STYLE.name}; "
            f"{(time.perf_counter() - started) / 60:.1f} min in all. Both pictures scored, "
            "as written (8-bit), with the same full-resolution objective.",
            "",
            "| run | iterations | wall s | full-resolution objective | content | style |",
            "|---|---|---|---|---|---|",
            f"| coarse to fine (auto: {plan}) | {coarse.iterations} "
            f"| {budget:.0f} | {s_coarse['total']:.4g} | {s_coarse.get('content', 0):.4g} "
            f"| {s_coarse.get('style', 0):.4g} |",
            f"| single scale, stopped at the same wall time | {flat.iterations} "
            f"| {flat_seconds:.0f} | {s_flat['total']:.4g} | {s_flat.get('content', 0):.4g} "
            f"| {s_flat.get('style', 0):.4g} |",
            "",
            f"The schedule's objective is {s_coarse['total'] / s_flat['total']:.2f}× the "
            "single-scale one's.",
            "",
        ]
    )
    publish(text, None if args.no_append else BENCHMARKS)


if __name__ == "__main__":
    main()
