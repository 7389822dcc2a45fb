"""How long `make demo` takes on a fresh clone, in its two parts.

    .venv/bin/python -m benchmarks.demo [--no-append]

Clones the repository's committed HEAD into a temporary folder and times, there,
``make install`` (a new virtual environment and every package: what a first `make demo`
does before anything else) and then ``make demo`` (the picture itself: 384 px, 200
iterations, with the environment already made). Prints a Markdown section with the
machine and both times and appends it to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

from benchmarks.report import BENCHMARKS, ROOT, publish


def _timed(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        clone = os.path.join(tmp, "neuralart")
        subprocess.run(["git", "clone", "--quiet", str(ROOT), clone], check=True)
        install = _timed(["make", "install"], clone)
        demo = _timed(["make", "demo"], clone)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cores = os.cpu_count()
    text = "\n".join(
        [
            f"## `make demo` on a fresh clone ({when})",
            "",
            f"`python -m benchmarks.demo` on {platform.machine()}, {cores} CPU cores, "
            f"Python {platform.python_version()}; pip fetched the packages from the "
            "machine's package index (a slower network or disk makes the install longer).",
            "",
            "| part | seconds |",
            "|---|---|",
            f"| `make install` (virtual environment and packages) | {install:.0f} |",
            f"| `make demo` after it (384 px, 200 iterations, classic) | {demo:.0f} |",
            f"| in all | {install + demo:.0f} |",
            "",
        ]
    )
    publish(text, None if args.no_append else BENCHMARKS)


if __name__ == "__main__":
    sys.exit(main())
