"""Peak memory of a whole run, measured from outside the process.

    .venv/bin/python -m benchmarks.memory PRESET SIZE [ITERATIONS]

Runs ``neuralart transfer`` on tubingen.jpg x starry_night.jpg (``benchmarks.images``:
../shared/images, or the repository's stand-ins where that folder is absent) in a child
process and prints one Markdown row: preset, size, iterations per level, wall
seconds and the child's peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.images import picture
from neuralart import cpucache


def main() -> None:
    preset, size = sys.argv[1], int(sys.argv[2])
    iterations = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "neuralart", "transfer",
            str(picture("tubingen.jpg")), str(picture("starry_night.jpg")),
            "-p", preset, "--size", str(size), "-n", str(iterations), "--seed", "0",
            "--device", "cpu", "-q", "-o", str(Path(tmp) / "out.png"),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        f"| {preset} | {size} | {iterations} | {seconds:.0f} | {peak_kib / 2**20:.2f} GiB "
        f"| {platform.machine()} CPU, block cache {cpucache.expected()} |"
    )


if __name__ == "__main__":
    main()
