"""Reproduce the measurable claims of Novak & Nikulin (2016) and write docs/paper-claims.md.

    .venv/bin/python -m benchmarks.paper_claims            # about 30 minutes on 2 CPU cores
    .venv/bin/python -m benchmarks.paper_claims --quick    # a smoke run: tiny sizes, no grids

(a) the share of exactly-zero Gram entries per layer with s = 0 and s = -1 on the shared
    photographs and paintings;
(b) the style loss after 10, 50 and 200 iterations, relative to its value at the start
    (the content image), for chain vs chain-unshifted and classic-shifted vs classic,
    each under its own objective;
(c) a contact sheet of all ten Table 2 presets on two content/style pairs
    (docs/compare-*.png).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

from neuralart.images import image_to_tensor, load_image, resize_long_edge, save_image
from neuralart.losses import Objective
from neuralart.optimize import run_lbfgs
from neuralart.presets import TABLE2_ORDER, bundled_names, resolve
from neuralart.sheet import contact_sheet
from neuralart.statistics import gram
from neuralart.transfer import FIRST_STEP_GREY_LEVELS, compare
from neuralart.vgg import LAYER_NAMES, load_vgg19

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "images"
DOCS = REPO / "docs"
PAIRS = [("tubingen.jpg", "starry_night.jpg"), ("golden_gate.jpg", "the_scream.jpg")]
CHECKPOINTS = (10, 50, 200)
NOTES_MARKER = "<!-- reading: kept when this file is regenerated -->"
LOSS_RUNS = [("chain", "chain-unshifted"), ("classic-shifted", "classic")]


def zero_shares(network, size: int) -> dict[str, tuple[float, float]]:
    """Per layer: mean share of exactly-zero Gram entries with s = 0 and with s = -1."""
    shares: dict[str, list[tuple[float, float]]] = {n: [] for n in LAYER_NAMES}
    files = sorted(SHARED.glob("*.jpg"))
    with torch.no_grad():
        for path in files:
            x = network.convention.to_network(
                image_to_tensor(resize_long_edge(load_image(path), size))
            )
            for name, f in network(x, LAYER_NAMES).items():
                f64 = f.double()
                plain = float((gram(f64, 0.0) == 0).float().mean())
                shifted = float((gram(f64, -1.0) == 0).float().mean())
                shares[name].append((plain, shifted))
    return {
        n: (statistics.mean(p for p, _ in v), statistics.mean(s for _, s in v))
        for n, v in shares.items()
    }


def relative_style_loss(network, preset: str, pair: tuple[str, str], size: int, iters: int):
    config, _ = resolve(preset)
    conv = network.convention
    content, style = (
        conv.to_network(image_to_tensor(resize_long_edge(load_image(SHARED / p), size)))
        for p in pair
    )
    objective = Objective(
        network, config.content, config.style, content_image=content, style_images=[style]
    )
    seen: dict[int, float] = {}

    def record(event) -> None:
        seen[event.iteration] = event.terms["style"]

    result = run_lbfgs(
        objective,
        content,
        iterations=iters,
        first_step=FIRST_STEP_GREY_LEVELS * conv.pixel_scale() / 255.0,
        callback=record,
    )
    start = seen[1]
    # The style loss at the start of iteration k+1 is the loss after k iterations.
    after = {k: seen.get(k + 1, result.final["style"]) / start for k in CHECKPOINTS if k <= iters}
    return after, result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no grids, no file")
    parser.add_argument("--size", type=int, default=192, help="long edge for (b) and (c)")
    parser.add_argument("--grid-iterations", type=int, default=200)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    started = time.time()
    network = load_vgg19()
    size = 64 if args.quick else args.size
    iters = 12 if args.quick else max(CHECKPOINTS)

    zero_size = 96 if args.quick else 256
    zeros = zero_shares(network, zero_size)
    losses = {}
    for pair in PAIRS[: 1 if args.quick else 2]:
        for a, b in LOSS_RUNS:
            for preset in (a, b):
                losses[(preset, pair)] = relative_style_loss(network, preset, pair, size, iters)
                print(f"(b) {preset} {pair}: {losses[(preset, pair)]}", flush=True)

    def per_level(name: str) -> int | list[int]:
        """The grid's iterations at every level of a preset that lists them per level."""
        levels = resolve(name, {})[0].optimizer.iterations
        count = args.grid_iterations
        return [count] * len(levels) if isinstance(levels, tuple) else count

    grids = []
    if not args.quick:
        names = [n for n in bundled_names() if n in TABLE2_ORDER]
        for content, style in PAIRS:
            configs = [
                resolve(n, {"size": size, "seed": 0, "optimizer": {"iterations": per_level(n)}})[0]
                for n in names
            ]
            results = compare(
                SHARED / content, [SHARED / style], configs, device=torch.device("cpu")
            )
            edge = max(results[0].image.size)
            cells = [
                ("content", resize_long_edge(load_image(SHARED / content), edge)),
                ("style", resize_long_edge(load_image(SHARED / style), edge)),
                *((n, r.image) for n, r in zip(names, results, strict=True)),
            ]
            out = DOCS / f"compare-{Path(content).stem}-{Path(style).stem}.png"
            save_image(contact_sheet(cells, columns=4), out)
            grids.append((out, sum(r.record["seconds"] for r in results)))
            print(f"(c) wrote {out}", flush=True)

    text = render(zeros, zero_size, losses, grids, size, iters, time.time() - started, args)
    if args.quick:
        print(text)
    else:
        target = DOCS / "paper-claims.md"
        # Hand-written reading below the marker survives a rerun.
        old = target.read_text() if target.exists() else ""
        kept = old[old.index(NOTES_MARKER) :] if NOTES_MARKER in old else f"{NOTES_MARKER}\n"
        target.write_text(f"{text}\n{kept}")
        print(f"wrote {target}")


def render(zeros, zero_size, losses, grids, size, iters, seconds, args) -> str:
    lines = [
        "# The paper's measurable claims, measured",
        "",
        "Written by `python -m benchmarks.paper_claims` "
        f"({seconds / 60:.0f} minutes on {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}). Network: the embedded, normalised VGG-19 with average "
        "pooling. Images: `../shared/images`.",
        "",
        "## (a) Zero entries of the Gram matrices",
        "",
        "Share of exactly-zero entries of each layer's Gram matrix, averaged over the 12 "
        f"shared photographs and paintings at a {zero_size}-px long edge (float64).",
        "",
        "| layer | s = 0 | s = −1 |",
        "|---|---|---|",
    ]
    for name, (plain, shifted) in zeros.items():
        lines.append(f"| {name} | {plain:.3f} | {shifted:.3f} |")
    worst = max(zeros, key=lambda n: zeros[n][0])
    lines += [
        "",
        f"Without the shift the deepest layers have the most zero entries ({worst}: "
        f"{zeros[worst][0]:.0%}); a zero entry means two filters never fire together, and "
        "the Gram matrix cannot say whether they were absent or just never co-occurring. "
        f"With s = −1 the share at {worst} is {zeros[worst][1]:.1%}.",
        "",
        "## (b) How fast the style loss falls",
        "",
        f"Style loss after k iterations divided by its value at the content image, at a "
        f"{size}-px long edge, each preset under its own objective and default weights.",
        "",
        "| pair | preset | " + " | ".join(f"after {k}" for k in CHECKPOINTS if k <= iters) + " |",
        "|---|---|" + "---|" * len([k for k in CHECKPOINTS if k <= iters]),
    ]
    for (preset, pair), (after, _) in losses.items():
        cols = " | ".join(f"{after[k]:.1%}" for k in CHECKPOINTS if k in after)
        lines.append(f"| {pair[0]} × {pair[1]} | {preset} | {cols} |")
    lines += ["", *findings(losses), ""]
    if grids:
        lines += [
            "## (c) The ten presets side by side",
            "",
            f"Each preset at its default weights, {size}-px long edge, "
            f"{args.grid_iterations} iterations (per level for cnn-mrf), seed 0.",
            "",
        ]
        for path, _ in grids:
            lines += [f"![{path.stem}]({path.name})", ""]
    return "\n".join(lines)


def findings(losses) -> list[str]:
    out = []
    for shifted, plain in LOSS_RUNS:
        for (preset, pair), (after, _) in losses.items():
            if preset != shifted:
                continue
            other = losses[(plain, pair)][0]
            k = min(after)
            verdict = "faster" if after[k] < other[k] else "slower"
            out.append(
                f"- {pair[0]} × {pair[1]}: after {k} iterations {shifted} kept "
                f"{after[k]:.0%} of its starting style loss, {plain} {other[k]:.0%} — the "
                f"shifted objective fell {verdict} at first."
            )
    return out


if __name__ == "__main__":
    main()
