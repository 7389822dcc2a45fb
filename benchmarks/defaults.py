"""The defaults check: every preset's default weights on every photograph × painting pair,
scored with ``neuralart score``'s figures.

    python -m benchmarks.defaults run [--size 128] [--iterations 150] [--presets a,b]
        [--pairs all|diagonal] [--style-weight W] [--out FILE]
    python -m benchmarks.defaults report [FILE] [--ceiling X]

``run`` appends one JSON line per (preset, pair, weight) to FILE (default
benchmarks/results/defaults-SIZE.jsonl) and keeps each picture beside it; a line already
there is not run again, so an interrupted check resumes. The two reference pictures of
each pair (the photograph and its colour transfer) are scored once. ``report`` prints, per
preset and weight, the worst and median figures over the pairs and the pairs whose
content distance is above the ceiling.

The pairs: ../shared/images split into photographs (PHOTOS) and paintings (the rest);
without that folder, the repository's own pictures (tests/data, examples).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "images"
RESULTS = REPO / "benchmarks" / "results"
PHOTOS = {"brad_pitt", "golden_gate", "hoovertowernight", "tubingen"}
FALLBACK_PHOTOS = [
    REPO / "tests/data/china.jpg",
    REPO / "tests/data/grace_hopper.jpg",
    REPO / "examples/chelsea.jpg",
    REPO / "tests/data/raccoon.jpg",
]
FALLBACK_PAINTINGS = [
    REPO / "tests/data/starry_night.jpg",
    REPO / "tests/data/the_scream.jpg",
    REPO / "tests/data/shipwreck.jpg",
    REPO / "tests/data/woman_with_a_hat.jpg",
]
GRAM_PRESETS = [
    "classic",
    "classic-dense",
    "classic-shifted",
    "all-to-content",
    "chain",
    "chain-unshifted",
    "chain-uniform",
    "chain-extended",
    "chain-blurred",
]
NEW_PRESETS = ["sliced-wasserstein", "gaussian-w2", "histogram"]
SEED = 0


def pictures() -> tuple[list[Path], list[Path]]:
    """(photographs, paintings)."""
    if SHARED.is_dir():
        files = sorted(p for p in SHARED.iterdir() if p.suffix.lower() in {".jpg", ".png"})
        return [p for p in files if p.stem in PHOTOS], [p for p in files if p.stem not in PHOTOS]
    return FALLBACK_PHOTOS, FALLBACK_PAINTINGS


def all_pairs(kind: str) -> list[tuple[Path, Path]]:
    """``all``: every photograph with every painting; ``diagonal``: each painting once,
    the photographs in turn (as many pairs as paintings)."""
    photos, paintings = pictures()
    if kind == "all":
        return [(c, s) for c in photos for s in paintings]
    return [(photos[i % len(photos)], s) for i, s in enumerate(paintings)]


def key(preset: str, content: Path, style: Path, weight: float) -> str:
    return f"{preset}|{content.stem}|{style.stem}|{weight:g}"


def shown_path(path: Path) -> str:
    """A picture's path as recorded: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def picture_at(recorded: str) -> Path:
    path = Path(recorded)
    return path if path.is_absolute() else REPO / path


def line_key(line: dict[str, Any]) -> str:
    if line["key"].startswith("reference"):
        return str(line["key"])
    return (
        f"{line['preset']}|{line['content_image']}|{line['style_image']}|{line['style_weight']:g}"
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Runner:
    """Runs presets on pairs and scores them, one network and scorer for all; appends
    one JSON line per run (and per pair's references) to ``out``, pictures beside it."""

    def __init__(self, out: Path, size: int, iterations: int, threads: int) -> None:
        import torch

        from neuralart.score import Scorer
        from neuralart.transfer import NetworkCache, pick_device
        from neuralart.vgg import load_vgg19

        torch.set_num_threads(threads)
        self.out, self.size, self.iterations = out, size, iterations
        self.folder = out.with_suffix("")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done = {line_key(line) for line in read_lines(out)}
        self.networks = NetworkCache(pick_device("cpu"))
        self.scorer = Scorer(load_vgg19("embedded"), size=size, seed=SEED)

    def _append(self, line: dict[str, Any]) -> None:
        with self.out.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
        self.done.add(line_key(line))

    def pair(self, content: Path, style: Path, presets: list[str], weight: float | None) -> None:
        from neuralart.images import load_image, save_image
        from neuralart.presets import resolve
        from neuralart.transfer import transfer

        style_image = load_image(style)
        target = self.scorer.style_target([style_image])
        content_target = None
        for preset in presets:
            flags: dict[str, Any] = {
                "size": self.size,
                "seed": SEED,
                "optimizer": {"iterations": self.iterations},
            }
            if weight is not None:
                flags["style"] = {"weight": weight}
            config, _ = resolve(preset, flags)
            k = key(preset, content, style, config.style.weight)
            if k in self.done:
                continue
            result = transfer(content, [style], config, network=self.networks.get(config))
            picture_path = self.folder / f"{k.replace('|', '_')}.png"
            save_image(result.image, picture_path)
            picture = self.scorer.prepare(result.image)
            if content_target is None:
                content_target = self.scorer.content_target(
                    load_image(content), picture, str(content)
                )
                self.references(content, style, content_target, target, style_image)
            score = self.scorer.score(picture, content_target, target)
            self._append(
                {
                    "key": k,
                    "preset": preset,
                    "content_image": content.stem,
                    "style_image": style.stem,
                    "style_weight": config.style.weight,
                    "size": list(result.size),
                    "iterations": result.iterations,
                    "seconds": round(result.seconds, 2),
                    "seconds_per_iteration": round(result.seconds / max(1, result.iterations), 4),
                    **score.as_dict(),
                    "picture": shown_path(picture_path),
                }
            )
            print(
                f"{k}: style {score.style:.3f} ssim {score.ssim:.3f} "
                f"content {score.content:.3f} ({result.seconds:.1f} s)",
                flush=True,
            )

    def references(self, content: Path, style: Path, own: Any, target: Any, image: Any) -> None:
        ref_key = f"reference|{content.stem}|{style.stem}"
        if ref_key in self.done:
            return
        scorer = self.scorer
        recoloured = scorer.color_transferred(own, [image])
        self._append(
            {
                "key": ref_key,
                "content_image": content.stem,
                "style_image": style.stem,
                "photograph": scorer.score(own.rgb, own, target).as_dict(),
                "colour-transfer": scorer.score(recoloured, own, target).as_dict(),
            }
        )


def run(args: argparse.Namespace) -> None:
    out = Path(args.out or RESULTS / f"defaults-{args.size}.jsonl")
    runner = Runner(out, args.size, args.iterations, args.threads)
    presets = args.presets.split(",") if args.presets else GRAM_PRESETS + NEW_PRESETS
    only = {tuple(item.split(":")) for item in args.only.split(",")} if args.only else None
    for content, style in all_pairs(args.pairs):
        if only is None or (content.stem, style.stem) in only:
            runner.pair(content, style, presets, args.style_weight)


DOC_PAIRS = [
    ("tubingen", "starry_night"),
    ("golden_gate", "the_scream"),
    ("hoovertowernight", "shipwreck"),
]
DOCS = REPO / "docs"


def sheet(args: argparse.Namespace) -> None:
    """Every Gram preset and the three distribution presets on DOC_PAIRS; a contact sheet
    per pair in docs/ and the table docs/scored-presets.md."""
    from neuralart.images import load_image, resize_long_edge, save_image
    from neuralart.sheet import contact_sheet

    out = Path(args.out or RESULTS / f"sheet-{args.size}.jsonl")
    runner = Runner(out, args.size, args.iterations, args.threads)
    photos, paintings = pictures()
    by_name = {p.stem: p for p in photos + paintings}
    pairs = [(by_name[c], by_name[s]) for c, s in DOC_PAIRS if c in by_name and s in by_name]
    if not pairs:
        pairs = all_pairs("diagonal")[:2]
    presets = GRAM_PRESETS + NEW_PRESETS
    for content, style in pairs:
        runner.pair(content, style, presets, None)
    lines = read_lines(out)
    refs = {(r["content_image"], r["style_image"]): r for r in lines if "photograph" in r}
    wanted = {p: runner_weight(p) for p in presets}
    runs = {
        (r["preset"], r["content_image"], r["style_image"]): r
        for r in lines
        if "preset" in r and r["style_weight"] == wanted[r["preset"]]
    }
    images = []
    for content, style in pairs:
        cells = [
            ("photograph", resize_long_edge(load_image(content), args.size)),
            (f"style: {style.stem}", resize_long_edge(load_image(style), args.size)),
        ]
        for preset in presets:
            r = runs[(preset, content.stem, style.stem)]
            label = f"{preset} · {r['style']:.2f} / {r['ssim']:.2f}"
            cells.append((label, load_image(picture_at(r["picture"]))))
        name = f"scored-{content.stem}-{style.stem}.jpg"
        save_image(contact_sheet(cells, columns=5), DOCS / name)
        images.append((content, style, name))
    table = table_text(pairs, presets, runs, refs, images, args)
    (DOCS / "scored-presets.md").write_text(table)
    print(table)


def runner_weight(preset: str) -> float:
    from neuralart.presets import resolve

    return float(resolve(preset)[0].style.weight)


def table_text(
    pairs: list[tuple[Path, Path]],
    presets: list[str],
    runs: dict[tuple[str, str, str], dict[str, Any]],
    refs: dict[tuple[str, str], dict[str, Any]],
    images: list[tuple[Path, Path, str]],
    args: argparse.Namespace,
) -> str:
    from neuralart.presets import resolve

    head = "| preset | paper row | style weight | " + " | ".join(
        f"{c.stem} × {s.stem}: style ↓ / ssim ↑ / content ↓" for c, s in pairs
    )
    lines = [
        "# The presets side by side, scored",
        "",
        f"Made by `python -m benchmarks.defaults sheet --size {args.size} "
        f"--iterations {args.iterations}`: each preset at its default weights, {args.size} px, "
        f"{args.iterations} iterations of one level, seed {SEED}, on the CPU "
        f"({args.threads} threads). The figures are `neuralart score`'s at {args.size} px "
        "(README, *Scoring a result*): style is the sliced Wasserstein distance of "
        "conv1_1…conv5_1 to the painting (lower is closer), ssim the structural similarity "
        "of the luminance to the photograph (1 is the photograph), content the relative "
        "conv4_2 distance to it (0 is the photograph). s/it: wall seconds per iteration "
        "over the whole run, on the machine of the run.",
        "",
        head + " | s/it |",
        "|---|---|---|" + "---|" * len(pairs) + "---|",
    ]
    for preset in presets:
        config = resolve(preset)[0]
        cells = []
        times = []
        for c, s in pairs:
            r = runs[(preset, c.stem, s.stem)]
            cells.append(f"{r['style']:.3f} / {r['ssim']:.3f} / {r['content']:.3f}")
            times.append(r["seconds_per_iteration"])
        lines.append(
            f"| {preset} | {paper_row(preset)} | {config.style.weight:g} | "
            + " | ".join(cells)
            + f" | {statistics.median(times):.2f} |"
        )
    for role, label in (
        ("photograph", "the photograph itself"),
        ("colour-transfer", "its colour transfer"),
    ):
        cells = []
        for c, s in pairs:
            r = refs[(c.stem, s.stem)][role]
            cells.append(f"{r['style']:.3f} / {r['ssim']:.3f} / {r['content']:.3f}")
        lines.append(f"| *{label}* | reference | — | " + " | ".join(cells) + " | — |")
    lines += [""] + [f"![{c.stem} × {s.stem}]({name})" for c, s, name in images]
    lines += [
        "",
        "Captions: preset · style distance / ssim.",
        "",
    ]
    return "\n".join(lines)


def paper_row(preset: str) -> str:
    from neuralart.presets import list_presets

    info = {i.name: i for i in list_presets()}.get(preset)
    return info.paper_row if info is not None and info.paper_row else "—"


def before_after(args: argparse.Namespace) -> None:
    """A contact sheet from the check's pictures: per pair, classic and the preset at each
    weight, captioned with the two rules' figures; written to ``--output``."""
    from PIL import Image

    from neuralart.sheet import contact_sheet

    path = Path(args.file or RESULTS / "defaults-128.jsonl")
    rows = list({line_key(r): r for r in read_lines(path)}.values())
    refs = {(r["content_image"], r["style_image"]): r for r in rows if "photograph" in r}
    weights = [float(w) for w in args.weights.split(",")]
    wanted = [("classic", runner_weight("classic"))] + [(args.preset, w) for w in weights]
    runs = {
        (r["preset"], r["style_weight"], r["content_image"], r["style_image"]): r
        for r in rows
        if "preset" in r
    }
    cells = []
    for item in args.only.split(","):
        content, style = item.split(":")
        classic = runs[("classic", wanted[0][1], content, style)]
        for preset, weight in wanted:
            r = runs[(preset, weight, content, style)]
            picture = Image.open(picture_at(r["picture"]))
            picture = picture.resize(
                (picture.width * 2, picture.height * 2), Image.Resampling.LANCZOS
            )
            drop = classic["ssim"] - r["ssim"]
            shown = 0.0 - drop if drop else 0.0
            progress = toward_style(r, refs)
            label = f"{preset} {weight:g}: ssim {shown:+.2f} vs classic, style {progress:.0%}"
            cells.append((label, picture))
    contact_sheet(cells, columns=len(wanted)).save(args.output)


def toward_style(row: dict[str, Any], refs: dict[tuple[str, str], dict[str, Any]]) -> float:
    """How far the result moved from the photograph's style figure towards 0."""
    photograph = refs[(row["content_image"], row["style_image"])]["photograph"]["style"]
    return float(1 - row["style"] / photograph)


def report(args: argparse.Namespace) -> None:
    """A markdown table per (preset, weight) over the pairs, against the criteria."""
    from neuralart.score import SSIM_MARGIN, STYLE_PROGRESS

    path = Path(args.file or RESULTS / "defaults-128.jsonl")
    rows = list({line_key(r): r for r in read_lines(path)}.values())  # a rerun counts once
    refs = {(r["content_image"], r["style_image"]): r for r in rows if "photograph" in r}
    classic = {
        (r["content_image"], r["style_image"]): r
        for r in rows
        if r.get("preset") == "classic" and r["style_weight"] == runner_weight("classic")
    }
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        if "preset" in r:
            groups.setdefault((r["preset"], r["style_weight"]), []).append(r)
    print(
        "| preset | style weight | pairs | ssim below classic's: median / worst "
        "| towards the style: median / least | content (conv4_2): median / max | verdict |"
    )
    print("|---|---|---|---|---|---|---|")
    order = {name: i for i, name in enumerate(GRAM_PRESETS + NEW_PRESETS)}

    def pair(r: dict[str, Any]) -> str:
        return f"{r['content_image']} × {r['style_image']}"

    def drop(r: dict[str, Any]) -> float:
        return float(classic[(r["content_image"], r["style_image"])]["ssim"] - r["ssim"])

    for (preset, weight), members in sorted(
        groups.items(), key=lambda item: (order.get(item[0][0], 99), -item[0][1])
    ):
        members = [r for r in members if (r["content_image"], r["style_image"]) in classic]
        if not members:
            continue
        drops = [drop(r) for r in members]
        toward = [toward_style(r, refs) for r in members]
        contents = [r["content"] for r in members]
        worst = max(members, key=drop)
        least = min(members, key=lambda r: toward_style(r, refs))
        lost = sum(d > SSIM_MARGIN for d in drops)
        flat = sum(t < STYLE_PROGRESS for t in toward)
        parts = [
            f"ssim more than {SSIM_MARGIN:g} below classic's on {lost}" if lost else "",
            f"towards the style less than {STYLE_PROGRESS:g} on {flat}" if flat else "",
        ]
        verdict = "; ".join(p for p in parts if p) or "meets both"
        print(
            f"| {preset} | {weight:g} | {len(members)} "
            f"| {statistics.median(drops):+.2f} / {max(drops):+.2f} ({pair(worst)}) "
            f"| {statistics.median(toward):.2f} / {min(toward):.2f} ({pair(least)}) "
            f"| {statistics.median(contents):.2f} / {max(contents):.2f} | {verdict} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--iterations", type=int, default=150)
    r.add_argument("--presets")
    r.add_argument("--pairs", choices=["all", "diagonal"], default="all")
    r.add_argument("--style-weight", type=float)
    r.add_argument("--only", help="CONTENT:STYLE,... (file names without suffix)")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out")
    d = sub.add_parser("sheet")
    d.add_argument("--size", type=int, default=256)
    d.add_argument("--iterations", type=int, default=100)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--out")
    b = sub.add_parser("before-after")
    b.add_argument("--preset", required=True)
    b.add_argument("--weights", required=True, help="W1,W2,...")
    b.add_argument("--only", required=True, help="CONTENT:STYLE,...")
    b.add_argument("--output", required=True)
    b.add_argument("file", nargs="?")
    p = sub.add_parser("report")
    p.add_argument("file", nargs="?")
    args = parser.parse_args()
    commands = {"run": run, "sheet": sheet, "report": report, "before-after": before_after}
    commands[args.command](args)


if __name__ == "__main__":
    main()
