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


def key(preset: str, content: Path, style: Path, weight: float | None) -> str:
    w = "default" if weight is None else f"{weight:g}"
    return f"{preset}|{content.stem}|{style.stem}|{w}"


def run(args: argparse.Namespace) -> None:
    import torch

    from neuralart.images import load_image, save_image
    from neuralart.presets import resolve
    from neuralart.score import Scorer
    from neuralart.transfer import NetworkCache, pick_device, transfer
    from neuralart.vgg import load_vgg19

    torch.set_num_threads(args.threads)
    out = Path(args.out or RESULTS / f"defaults-{args.size}.jsonl")
    folder = out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        done = {json.loads(line)["key"] for line in out.read_text().splitlines() if line.strip()}
    device = pick_device("cpu")
    networks = NetworkCache(device)
    scorer = Scorer(load_vgg19("embedded"), size=args.size, seed=SEED)
    presets = args.presets.split(",") if args.presets else GRAM_PRESETS + NEW_PRESETS
    for content, style in all_pairs(args.pairs):
        style_image = load_image(style)
        target = scorer.style_target([style_image])
        ref_key = f"reference|{content.stem}|{style.stem}"
        content_target = None
        for preset in presets:
            k = key(preset, content, style, args.style_weight)
            if k in done:
                continue
            flags: dict[str, Any] = {
                "size": args.size,
                "seed": SEED,
                "optimizer": {"iterations": args.iterations},
            }
            if args.style_weight is not None:
                flags["style"] = {"weight": args.style_weight}
            config, _ = resolve(preset, flags)
            result = transfer(content, [style], config, network=networks.get(config))
            picture_path = folder / f"{k.replace('|', '_')}.png"
            save_image(result.image, picture_path)
            picture = scorer.prepare(result.image)
            if content_target is None:
                content_target = scorer.content_target(load_image(content), picture, str(content))
                if ref_key not in done:
                    refs = {
                        "photograph": scorer.score(content_target.rgb, content_target, target),
                        "colour-transfer": scorer.score(
                            scorer.color_transferred(content_target, [style_image]),
                            content_target,
                            target,
                        ),
                    }
                    line = {
                        "key": ref_key,
                        "content_image": content.stem,
                        "style_image": style.stem,
                        **{name: s.as_dict() for name, s in refs.items()},
                    }
                    with out.open("a") as fh:
                        fh.write(json.dumps(line) + "\n")
                    done.add(ref_key)
            score = scorer.score(picture, content_target, target)
            line = {
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
                "picture": str(picture_path),
            }
            with out.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
            done.add(k)
            print(
                f"{k}: style {score.style:.3f} ssim {score.ssim:.3f} "
                f"content {score.content:.3f} ({result.seconds:.1f} s)",
                flush=True,
            )


def report(args: argparse.Namespace) -> None:
    path = Path(args.file or RESULTS / "defaults-128.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    refs = {
        (r["content_image"], r["style_image"]): r for r in rows if r["key"].startswith("reference")
    }
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        if not r["key"].startswith("reference"):
            groups.setdefault((r["preset"], r["style_weight"]), []).append(r)
    print(
        f"{'preset':<20}{'weight':>8}{'pairs':>6}{'ssim min':>9}{'med':>6}"
        f"{'content max':>12}{'med':>6}{'toward style med':>17}{'min':>6}{'s/it':>7}  above"
    )
    for (preset, weight), members in groups.items():
        ssims = [r["ssim"] for r in members]
        contents = [r["content"] for r in members]
        toward = [
            1 - r["style"] / refs[(r["content_image"], r["style_image"])]["photograph"]["style"]
            for r in members
        ]
        above = [
            f"{r['content_image']}×{r['style_image']}"
            for r in members
            if r["content"] > args.ceiling
        ]
        spi = statistics.median(r["seconds_per_iteration"] for r in members)
        print(
            f"{preset:<20}{weight:>8g}{len(members):>6}{min(ssims):>9.3f}"
            f"{statistics.median(ssims):>6.3f}{max(contents):>12.3f}"
            f"{statistics.median(contents):>6.3f}{statistics.median(toward):>17.2f}"
            f"{min(toward):>6.2f}{spi:>7.3f}  {', '.join(above)}"
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
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out")
    p = sub.add_parser("report")
    p.add_argument("file", nargs="?")
    p.add_argument("--ceiling", type=float, default=0.8)
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
