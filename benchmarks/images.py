"""Where the benchmarks find the pictures they name.

The full-size pictures are in ``../shared/images`` beside the repository, where a
checkout has that folder; a clone without it falls back to the repository's own small
pictures (``examples``, then ``tests/data``). A picture the repository does not have is
replaced by a stand-in of the same kind (a photograph for a photograph), and a note on
stderr says so: the figures are then not comparable with ones measured on the originals.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "images"
REPOSITORY = (ROOT / "examples", ROOT / "tests" / "data")
# Pictures of ../shared/images that the repository does not carry -> its stand-in.
STAND_INS = {"tubingen.jpg": "china.jpg", "golden_gate.jpg": "china.jpg"}


def picture(name: str, *, shared: bool = True) -> Path:
    """The path of the picture called ``name``: from ../shared/images if it is there (and
    ``shared``), else from the repository, else the repository's stand-in for it."""
    folders = ((SHARED,) if shared else ()) + REPOSITORY
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    stand_in = STAND_INS.get(name)
    if stand_in is not None:
        path = picture(stand_in, shared=shared)
        print(f"note: {name} is not here; using {os.path.relpath(path, ROOT)}", file=sys.stderr)
        return path
    where = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(f"no picture {name!r} in {where}")
