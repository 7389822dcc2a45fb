"""Shared fixtures: the real network (loaded once) and the test images in tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"  # sources and licences: data/README.md
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def network():
    """The embedded, normalised VGG-19 with average pooling, on the CPU."""
    from neuralart.vgg import load_vgg19

    return load_vgg19("embedded", pooling="average", normalize=True, device="cpu")


@pytest.fixture(scope="session")
def held_out_images() -> list[Path]:
    """Photographs and paintings that the normalisation's calibration never saw."""
    files = sorted(DATA.glob("*.jpg"))
    if not files:
        pytest.fail(f"the test images are missing: {DATA}")
    return files


@pytest.fixture(scope="session")
def content_path() -> Path:
    return EXAMPLES / "chelsea.jpg"


@pytest.fixture(scope="session")
def style_path() -> Path:
    return EXAMPLES / "starry_night.jpg"


def error_line(result) -> str:
    """A CLI run's stderr must be exactly one 'error: ...' line, with no traceback."""
    text = result.stderr.strip()
    assert "Traceback" not in result.output + result.stderr
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error: ")
    return text
