"""Where the benchmarks' results go: printed, and appended to BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"


def publish(text: str, append_to: Path | None = BENCHMARKS) -> None:
    """Print a Markdown section and append it to ``append_to`` (None: print only)."""
    print(text)
    if append_to is not None:
        with append_to.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
