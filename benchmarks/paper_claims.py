"""Reproduce the measurable claims of Novak & Nikulin (2016) and write docs/paper-claims.md.

    .venv/bin/python -m benchmarks.paper_claims                # 40-70 minutes on 2 CPU cores
    .venv/bin/python -m benchmarks.paper_claims --quick        # smoke run into a temporary folder
    .venv/bin/python -m benchmarks.paper_claims --render-only  # the document again, from the
                                                               # measurements saved by the last run

(a) the share of exactly-zero Gram entries per layer with s = 0 and s = -1 on the
    photographs and paintings;
(b) the style loss after 10, 50 and 200 iterations, relative to its value at the start
    (the content image), for chain vs chain-unshifted and classic-shifted vs classic,
    each under its own objective;
(c) a contact sheet of the Table 2 presets on two content/style pairs (docs/compare-*.png).

The whole of docs/paper-claims.md, its Reading section included, is written here: every
figure in it is formatted from this run's measurements, which are saved next to it
(docs/paper-claims.json) so the text can be re-rendered without optimising again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neuralart.errors import NeuralartError
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
FALLBACK_DIRS = ("examples", "tests/data")  # the repository's own images, when SHARED is absent
DOCS = REPO / "docs"
PAIRS = [("tubingen.jpg", "starry_night.jpg"), ("golden_gate.jpg", "the_scream.jpg")]
FALLBACK_PAIRS = [("chelsea.jpg", "starry_night.jpg")]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CHECKPOINTS = (10, 50, 200)
LOSS_RUNS = [("chain", "chain-unshifted"), ("classic-shifted", "classic")]
DEFAULT_SIZE = 192
DEFAULT_GRID_ITERATIONS = 200
# (a) counts as "many zero entries" when some layer has at least this share of them.
SPARSE_SHARE = 0.10

# What the contact sheets show, written by looking at them (docs/compare-*.png as made with
# the default --size and --grid-iterations from ../shared/images). Only printed for those;
# no figure goes in here: numbers are formatted in from the measurements.
SHEET_SUMMARY = "- **Uniform regions are repainted more uniformly by the chain presets: visible.**"
SHEET_OBSERVATIONS = {
    ("tubingen.jpg", "starry_night.jpg"): (
        "On tubingen × starry_night the chain presets (chain, chain-unshifted, chain-blurred, "
        "chain-extended) and classic-dense paint the sky with long, flowing strokes in deep "
        "blue, while classic and classic-shifted fill it with small repeated swirls, classic "
        "with several small yellow moons among them. cnn-mrf re-assembles pieces of the "
        "painting: the dark cypress stands at the left edge and yellow stars are scattered "
        "over the sky, in a faded, washed-out picture."
    ),
    ("golden_gate.jpg", "the_scream.jpg"): (
        "On golden_gate × the_scream the chain presets and classic-dense lay a broad orange "
        "band along the horizon, like the painting's sky, and paint the rest of the sky in "
        "larger pink and lilac patches (chain-unshifted in an almost even orange-beige), while "
        "classic and classic-shifted cover sky and water with a fine multicoloured speckle and "
        "all-to-content leaves small checkered blotches in the sky. cnn-mrf keeps the "
        "photograph's layout in muted purple-grey with pink-orange streaks across the sky; no "
        "piece of the screaming figure can be recognised."
    ),
}
SHEET_CLOSING = (
    "At its bundled style weight ({chain_uniform:g}) chain-uniform keeps more of the "
    "photograph than the other Gram-matrix presets on both sheets: the facades stay pink and "
    "white, the Golden Gate's sky and water blue-grey, with only a fine texture over them."
)


@dataclass
class Images:
    files: list[Path]  # every image for (a)
    pairs: list[tuple[Path, Path]]  # content, style for (b) and (c)
    source: str  # where they came from, for the document


def choose_images(shared: Path = SHARED) -> Images:
    """../shared/images when it exists (this document's intended source), else the
    repository's own images in examples/ and tests/data/."""
    if shared.is_dir():
        dirs, source = [shared], "`../shared/images`"
        wanted = PAIRS
    else:
        dirs = [REPO / d for d in FALLBACK_DIRS if (REPO / d).is_dir()]
        source = (
            "the repository's own "
            + " and ".join(f"`{d.relative_to(REPO)}/`" for d in dirs)
            + " (`../shared/images`, the intended source, was missing)"
        )
        wanted = PAIRS + FALLBACK_PAIRS
    files = sorted(
        (p for d in dirs for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: (p.name, str(p)),
    )
    by_name: dict[str, Path] = {}
    for p in files:
        by_name.setdefault(p.name, p)
    pairs = [(by_name[c], by_name[s]) for c, s in wanted if c in by_name and s in by_name]
    if not pairs:
        raise SystemExit(f"no content/style pair of {wanted} found in {source}")
    return Images(files=files, pairs=pairs, source=source)


def zero_shares(network, files: list[Path], size: int):
    """Per layer: mean share of exactly-zero Gram entries with s = 0 and with s = -1.

    Returns the shares and the names of the images that could be read.
    """
    shares: dict[str, list[tuple[float, float]]] = {n: [] for n in LAYER_NAMES}
    used = []
    with torch.no_grad():
        for path in files:
            try:
                img = load_image(path)
            except NeuralartError as exc:  # tests/data may hold deliberately broken files
                print(f"(a) skipped {path}: {exc}", flush=True)
                continue
            used.append(str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name)
            x = network.convention.to_network(image_to_tensor(resize_long_edge(img, size)))
            for name, f in network(x, LAYER_NAMES).items():
                f64 = f.double()
                plain = float((gram(f64, 0.0) == 0).float().mean())
                shifted = float((gram(f64, -1.0) == 0).float().mean())
                shares[name].append((plain, shifted))
    table = {
        n: [statistics.mean(p for p, _ in v), statistics.mean(s for _, s in v)]
        for n, v in shares.items()
    }
    return table, used


def relative_style_loss(network, preset: str, pair: tuple[Path, Path], size: int, iters: int):
    """Style loss after each checkpoint over its value at the start, and the seconds taken."""
    config, _ = resolve(preset)
    conv = network.convention
    content, style = (
        conv.to_network(image_to_tensor(resize_long_edge(load_image(p), size))) for p in pair
    )
    objective = Objective(
        network, config.content, config.style, content_image=content, style_images=[style]
    )
    seen: dict[int, float] = {}

    def record(event) -> None:
        seen[event.iteration] = event.terms["style"]

    started = time.perf_counter()
    result = run_lbfgs(
        objective,
        content,
        iterations=iters,
        first_step=FIRST_STEP_GREY_LEVELS * conv.pixel_scale() / 255.0,
        callback=record,
    )
    seconds = time.perf_counter() - started
    start = seen[1]
    # The style loss at the start of iteration k+1 is the loss after k iterations.
    after = {k: seen.get(k + 1, result.final["style"]) / start for k in CHECKPOINTS if k <= iters}
    return after, seconds


def measure(args, images: Images, out_dir: Path) -> dict[str, Any]:
    """Run (a), (b) and (c); the contact sheets go to out_dir. Returns the measurements."""
    started = time.perf_counter()
    network = load_vgg19()
    size = 64 if args.quick else args.size
    iters = 12 if args.quick else max(CHECKPOINTS)
    zero_size = 96 if args.quick else 256
    pairs = images.pairs[:1] if args.quick else images.pairs

    zeros, used = zero_shares(network, images.files, zero_size)
    losses = []
    for content, style in pairs:
        for a, b in LOSS_RUNS:
            for preset in (a, b):
                after, seconds = relative_style_loss(network, preset, (content, style), size, iters)
                losses.append(
                    {
                        "preset": preset,
                        "content": content.name,
                        "style": style.name,
                        "after": after,
                        "seconds": seconds,
                    }
                )
                print(f"(b) {preset} {content.name} x {style.name}: {after}", flush=True)

    # The quick run's sheets are tiny but still go through every preset once.
    grid_size = 160 if args.quick else size
    grid_iterations = 2 if args.quick else args.grid_iterations
    names = [n for n in bundled_names() if n in TABLE2_ORDER]
    per_level_names = [
        n for n in names if isinstance(resolve(n, {})[0].optimizer.iterations, (tuple, list))
    ]

    def iterations_for(name: str) -> int | list[int]:
        """The grid's iterations, at every level of a preset that lists them per level."""
        levels = resolve(name, {})[0].optimizer.iterations
        if isinstance(levels, (tuple, list)):
            return [grid_iterations] * len(levels)
        return grid_iterations

    grids = []
    for content, style in pairs:
        configs = [
            resolve(
                n, {"size": grid_size, "seed": 0, "optimizer": {"iterations": iterations_for(n)}}
            )[0]
            for n in names
        ]
        t0 = time.perf_counter()
        outcome = compare(content, [style], configs, device=torch.device("cpu"))
        seconds = time.perf_counter() - t0
        # compare() returns its runs as a list, or (newer) in a Comparison's .results.
        results = list(getattr(outcome, "results", outcome))
        edge = max(results[0].image.size)
        cells = [
            ("content", resize_long_edge(load_image(content), edge)),
            ("style", resize_long_edge(load_image(style), edge)),
            *((n, r.image) for n, r in zip(names, results, strict=True)),
        ]
        out = out_dir / f"compare-{content.stem}-{style.stem}.png"
        save_image(contact_sheet(cells, columns=4), out)
        grids.append(
            {"file": out.name, "content": content.name, "style": style.name, "seconds": seconds}
        )
        print(f"(c) wrote {out} in {seconds / 60:.1f} minutes", flush=True)

    return {
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "source": images.source,
        "images": used,
        "zero_size": zero_size,
        "zeros": zeros,
        "size": size,
        "iterations": iters,
        "losses": losses,
        "grid_size": grid_size,
        "grid_iterations": grid_iterations,
        "presets": names,
        "per_level": per_level_names,
        "grids": grids,
        "weights": {n: resolve(n, {})[0].style.weight for n in names},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and iterations, one pair, written to a temporary folder",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the document from the measurements saved by the last run",
    )
    parser.add_argument("--out", type=Path, help="folder for the document (default: docs/)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="long edge for (b), (c)")
    parser.add_argument("--grid-iterations", type=int, default=DEFAULT_GRID_ITERATIONS)
    args = parser.parse_args()
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="paper-claims-")) if args.quick else DOCS)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "paper-claims.json"
    if not args.render_only:
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        measurements = measure(args, choose_images(), out_dir)
        saved.write_text(json.dumps(measurements, indent=1) + "\n")
    # Render from the file just as --render-only does, so both give the same text.
    m = json.loads(saved.read_text())
    target = out_dir / "paper-claims.md"
    target.write_text(render(m))
    print(f"wrote {target}")


# --------------------------------------------------------------------------- the document


def minutes(seconds: float) -> str:
    n = round(seconds / 60)
    return f"{n} minute{'' if n == 1 else 's'}"


def checkpoints(m) -> list[int]:
    return [k for k in CHECKPOINTS if k <= m["iterations"]]


def comparisons(m) -> list[dict[str, Any]]:
    """Each shifted/unshifted couple on each pair, with both runs' relative losses."""
    by_key = {(r["preset"], r["content"], r["style"]): r for r in m["losses"]}
    out = []
    for r in m["losses"]:
        for shifted, plain in LOSS_RUNS:
            if r["preset"] == shifted:
                other = by_key[(plain, r["content"], r["style"])]
                out.append(
                    {
                        "shifted": shifted,
                        "plain": plain,
                        "pair": f"{Path(r['content']).stem} × {Path(r['style']).stem}",
                        "s": {int(k): v for k, v in r["after"].items()},
                        "p": {int(k): v for k, v in other["after"].items()},
                    }
                )
    return out


def faster_or_slower(c, k: int) -> str:
    return "faster" if c["s"][k] < c["p"][k] else "slower"


def render(m) -> str:
    ks = checkpoints(m)
    images = ", ".join(f"`{n}`" for n in m["images"])
    lines = [
        "# The paper's measurable claims, measured",
        "",
        "Written by `python -m benchmarks.paper_claims` "
        f"({minutes(m['seconds'])} on {m['threads']} CPU threads, "
        f"torch {m['torch']}){' — a --quick smoke run' if m['quick'] else ''}; all of it, "
        "the Reading included, so edits by hand do not survive a rerun. "
        "Network: the embedded, normalised VGG-19 with average pooling. "
        f"Images: {m['source']}: {images}.",
        "",
        "## (a) Zero entries of the Gram matrices",
        "",
        "Share of exactly-zero entries of each layer's Gram matrix, averaged over the "
        f"{len(m['images'])} images at a {m['zero_size']}-px long edge (float64).",
        "",
        "| layer | s = 0 | s = −1 |",
        "|---|---|---|",
    ]
    zeros = m["zeros"]
    for name, (plain, shifted) in zeros.items():
        lines.append(f"| {name} | {plain:.3f} | {shifted:.3f} |")
    worst = max(zeros, key=lambda n: zeros[n][0])
    lines += [
        "",
        f"Without the shift the most zero entries are at {worst} ({zeros[worst][0]:.0%}); "
        "a zero entry means two filters never fire together, and the Gram matrix cannot say "
        "whether they were absent or just never co-occurring. "
        f"With s = −1 the share at {worst} is {zeros[worst][1]:.1%}.",
        "",
        "## (b) How fast the style loss falls",
        "",
        f"Style loss after k iterations divided by its value at the content image, at a "
        f"{m['size']}-px long edge, each preset under its own objective and default weights; "
        f"L-BFGS with a first step of {FIRST_STEP_GREY_LEVELS:g} grey levels.",
        "",
        "| pair | preset | " + " | ".join(f"after {k}" for k in ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for r in m["losses"]:
        cols = " | ".join(f"{r['after'][str(k)]:.1%}" for k in ks)
        lines.append(f"| {r['content']} × {r['style']} | {r['preset']} | {cols} |")
    k0 = ks[0]
    lines.append("")
    for c in comparisons(m):
        lines.append(
            f"- {c['pair']}: after {k0} iterations {c['shifted']} kept {c['s'][k0]:.0%} of "
            f"its starting style loss, {c['plain']} {c['p'][k0]:.0%} — the shifted objective "
            f"fell {faster_or_slower(c, k0)} at first."
        )
    lines.append("")
    if m["grids"]:
        per_level = m["per_level"]
        lines += [
            f"## (c) The {len(m['presets'])} Table 2 presets side by side",
            "",
            f"Each preset as bundled, at its default weights, {m['grid_size']}-px long edge, "
            f"{m['grid_iterations']} iterations"
            + (f" ({', '.join(per_level)}: at each of its levels)" if per_level else "")
            + ", seed 0. Style weights: "
            + ", ".join(f"{n} {w:g}" for n, w in m["weights"].items())
            + ".",
            "",
        ]
        for g in m["grids"]:
            lines += [
                f"![{Path(g['file']).stem}]({g['file']})",
                "",
                f"{g['content']} × {g['style']}: all {len(m['presets'])} presets in "
                f"{minutes(g['seconds'])} (wall time, timed around `compare`).",
                "",
            ]
    lines += reading(m)
    return "\n".join(lines).rstrip() + "\n"


def verdict(holds: int, of: int) -> str:
    return "confirmed" if holds == of else "not confirmed" if holds == 0 else "mixed"


def reading(m) -> list[str]:
    out = ["## Reading", ""]

    # (a) Many zero entries without the shift, none with it.
    zeros = m["zeros"]
    worst = max(zeros, key=lambda n: zeros[n][0])
    block = worst.split("_")[0]
    others = [zeros[n][0] for n in zeros if n.startswith(f"{block}_") and n != worst]
    shifted_max = max(s for _, s in zeros.values())
    sparse = zeros[worst][0] >= SPARSE_SHARE
    removed = shifted_max == 0.0
    rest = (
        f" and the other {block} layers hold {min(others):.0%}–{max(others):.0%}" if others else ""
    )
    with_shift = "none is" if removed else f"at most {shifted_max:.1%} of any layer's entries are"
    out.append(
        f"- **Zero Gram entries (§3.3): {verdict(sparse + removed, 2)}.** Without the shift, "
        f"{zeros[worst][0]:.0%} of the entries of {worst}'s Gram matrix are exactly zero"
        f"{rest}; with s = −1 {with_shift}. (Counted as many zero entries when some layer "
        f"has at least {SPARSE_SHARE:.0%} of them.) The paper's argument, that a zero entry "
        "is ambiguous (never co-active, or simply inactive), applies to "
        f"{zeros[worst][0]:.0%} of {worst}'s statistic."
    )

    # (b) The shift speeds up the first iterations.
    ks = checkpoints(m)
    k0, later = ks[0], ks[1:]
    cs = comparisons(m)
    faster = [c for c in cs if faster_or_slower(c, k0) == "faster"]
    details = "; ".join(
        f"{c['shifted']} against {c['plain']} on {c['pair']}: {c['s'][k0]:.0%} against "
        f"{c['p'][k0]:.0%} ({faster_or_slower(c, k0)})"
        for c in cs
    )
    text = (
        f"- **The shift speeds up the first iterations: {verdict(len(faster), len(cs))}.** "
        f"After {k0} iterations the shifted objective had fallen further, relative to its own "
        f"start, in {len(faster)} of {len(cs)} comparisons (share of the starting style loss "
        f"left, shifted against unshifted: {details})."
    )
    if later:
        lower = [c for c in cs if all(c["p"][k] < c["s"][k] for k in later)]
        text += (
            f" After {' and '.join(map(str, later))} iterations the unshifted objective sat "
            f"lower relative to its own start in {len(lower)} of {len(cs)} comparisons."
        )
    text += (
        " Each number is relative to its own objective's starting value, and the shifted and "
        "unshifted objectives measure different things, so this compares how quickly each "
        "optimisation gets going, not which picture is better. These runs use neuralart's "
        f"L-BFGS with a first step of {FIRST_STEP_GREY_LEVELS:g} grey levels (see the README); "
        "the paper's base code used a different first step, which may account for part of the "
        "difference."
    )
    out.append(text)

    # (c) What the sheets look like: prose, only for the sheets it was written from.
    seen = [
        SHEET_OBSERVATIONS[(g["content"], g["style"])]
        for g in m["grids"]
        if (g["content"], g["style"]) in SHEET_OBSERVATIONS
    ]
    as_looked_at = (
        not m["quick"]
        and m["grid_size"] == DEFAULT_SIZE
        and m["grid_iterations"] == DEFAULT_GRID_ITERATIONS
        and len(seen) == len(m["grids"])
    )
    if m["grids"] and as_looked_at and all(seen):
        weight = m["weights"].get("chain-uniform")
        closing = [] if weight is None else [SHEET_CLOSING.format(chain_uniform=weight)]
        out.append(" ".join([SHEET_SUMMARY, *seen, *closing]))
    elif m["grids"]:
        out.append(
            "- **The contact sheets:** no written observations for sheets made with these "
            "images or settings; look at them above."
        )
    return [*out, ""]


if __name__ == "__main__":
    main()
