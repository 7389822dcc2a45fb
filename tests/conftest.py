"""Shared fixtures: the real network (loaded once) and the shared test images."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_IMAGES = REPO.parent / "shared" / "images"
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def network():
    """The embedded, normalised VGG-19 with average pooling, on the CPU."""
    from neuralart.vgg import load_vgg19

    return load_vgg19("embedded", pooling="average", normalize=True, device="cpu")


@pytest.fixture(scope="session")
def shared_images() -> list[Path]:
    files = sorted(SHARED_IMAGES.glob("*.jpg"))
    if not files:
        pytest.fail(f"the shared test images are missing: {SHARED_IMAGES}")
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
