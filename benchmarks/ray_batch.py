"""The Ray runner against the plain batch: make the folder of pictures, print the commands.

    python -m benchmarks.ray_batch FOLDER [--count 8] [--size 64]

writes COUNT pictures (the photographs in tests/data and examples, cycled, long edge SIZE)
into FOLDER/in and prints the commands that BENCHMARKS.md times: the plain batch, and
``--ray`` with 1 and 2 workers, all with the same style, preset, seed and iterations.
Pictures per minute = COUNT × 60 / the command's median wall seconds.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from neuralart.images import load_image, resize_long_edge, save_image

REPO = Path(__file__).resolve().parent.parent
STYLE = REPO / "tests" / "data" / "starry_night.jpg"
PAINTINGS = {"starry_night", "the_scream", "woman_with_a_hat"}


def photographs() -> list[Path]:
    found = [p for p in sorted((REPO / "tests" / "data").glob("*.jpg")) if p.stem not in PAINTINGS]
    return [*found, REPO / "examples" / "chelsea.jpg"]


def prepare(folder: Path, count: int, size: int) -> Path:
    inputs = folder / "in"
    inputs.mkdir(parents=True, exist_ok=True)
    sources = photographs()
    for i in range(count):
        source = sources[i % len(sources)]
        picture = resize_long_edge(load_image(source), size)
        save_image(picture, inputs / f"{i + 1:02d}-{source.stem}.png")
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    inputs = prepare(args.folder, args.count, args.size)
    run = [
        "neuralart", "transfer", str(inputs), str(STYLE), "--preset", "classic",
        "--size", str(args.size), "--iterations", str(args.iterations), "--seed", "0", "-q",
    ]  # fmt: skip
    out = args.folder / "out"
    commands = {
        "local batch": [*run, "--out-dir", f"{out}-local"],
        "ray, 1 worker": [*run, "--out-dir", f"{out}-ray1", "--ray-workers", "1", "--ray"],
        "ray, 2 workers": [*run, "--out-dir", f"{out}-ray2", "--ray-workers", "2", "--ray"],
    }
    for name, words in commands.items():
        print(f"{name}: {shlex.join(words)}")


if __name__ == "__main__":
    main()
