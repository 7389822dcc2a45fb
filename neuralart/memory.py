"""A memory check before the first iteration: refuse a run that cannot fit, in one line.

The three-way statistics of paper §4.4-§4.5 hold N²·K entries per layer (0.5 GiB for a
512-channel layer); a run that does not fit would otherwise swap the machine or die in
the middle. :func:`check_memory` estimates the bytes a configuration needs at the
largest level, from the configuration and the picture's size alone (no network, no
tensors), and compares them with what the device has free.

The estimate, in float32 (4 bytes) entries:

* style statistics: 2·ΣE + 3·max E, E the entries of one term's statistic: every term
  keeps its target and its difference from the picture's statistic until the backward
  pass; the term being formed or differentiated holds up to three more of its size;
* blocks of the three-way statistics: 3 × ``statistics.CHUNK_ELEMENTS``;
* the network: 4 × Σ N_l·H_l·W_l over the layers it runs (the maps kept for the
  backward pass and their gradients), plus its weights;
* L-BFGS: two vectors of the picture's size per remembered step.

``NEURALART_MEMORY_AVAILABLE`` (bytes, or a number with K, M, G or T) replaces the free
memory measured on the device: to test the check, or to keep a run within a budget.
"""

from __future__ import annotations

import os
import re
import warnings

import torch

from neuralart.config import LAYER_NAMES, Config
from neuralart.errors import NeuralartError
from neuralart.losses import content_terms, style_layers, style_terms
from neuralart.statistics import CHUNK_ELEMENTS
from neuralart.vgg import CHANNELS

FLOAT = 4  # bytes
WEIGHT_BYTES = 2 * 20_024_384 * FLOAT  # the 16 convolutions' parameters, loaded and in use
OVERHEAD = 512 << 20  # the Python process, torch's own buffers, the images
ENVIRONMENT = "NEURALART_MEMORY_AVAILABLE"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def layer_size(name: str, height: int, width: int) -> tuple[int, int]:
    """(H, W) of a layer's map for a (height, width) picture: each pool floors a half."""
    pools = int(name[4]) - 1
    return max(1, height >> pools), max(1, width >> pools)


def term_entries(config: Config, a: str, b: str, height: int, width: int) -> int:
    """Entries of one style term's statistic (or, for mrf, of its patch bank)."""
    style = config.style
    na, nb = CHANNELS[a], CHANNELS[b]
    if style.statistic == "content-aware":
        return na * na * CHANNELS[style.content_layer]
    if style.statistic == "gram-cube":
        return na**3
    if style.statistic == "mrf":
        h, w = layer_size(a, height, width)
        copies = (1 + 2 * style.rotations) * (1 + 2 * style.scales)
        patches = (h // style.patch_stride + 1) * (w // style.patch_stride + 1) * copies
        return 2 * patches * na * style.patch_size**2  # the bank and its normalised copy
    return na * nb * (9 if style.adjacent else 1)


def estimate(config: Config, size: tuple[int, int]) -> tuple[int, int, str]:
    """(bytes in all, bytes of the style statistics, the largest term) at (width, height)."""
    width, height = size
    terms = style_terms(config.style) if config.style.weight > 0 else []
    entries = {t.label: term_entries(config, t.a, t.b, height, width) for t in terms}
    largest = max(entries, key=entries.__getitem__, default="")
    statistics = FLOAT * (2 * sum(entries.values()) + 3 * max(entries.values(), default=0))
    if config.style.statistic in ("content-aware", "gram-cube") and terms:
        statistics += FLOAT * 3 * CHUNK_ELEMENTS
    layers = style_layers(config.style, terms) + [n for n, _ in content_terms(config.content)]
    deepest = max((LAYER_NAMES.index(n) for n in layers), default=-1)
    maps = sum(
        CHANNELS[n] * layer_size(n, height, width)[0] * layer_size(n, height, width)[1]
        for n in LAYER_NAMES[: deepest + 1]
    )
    values = 3 * height * width
    counts = config.optimizer.level_iterations(max(size))
    kept = min(config.optimizer.history_for(values), max(1, counts[-1]))
    lbfgs = 2 * (kept + 3) * values * FLOAT  # the pairs, and the current and last x and g
    total = statistics + 4 * FLOAT * maps + lbfgs + WEIGHT_BYTES + OVERHEAD
    return total, statistics, largest


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if match is None:
        raise NeuralartError(
            f"{ENVIRONMENT} must be a number of bytes, e.g. 8G or 500M; got {text!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available(device: torch.device) -> int | None:
    """Free bytes on the device (the environment variable first); None if unknown."""
    override = os.environ.get(ENVIRONMENT)
    if override:
        return _parse_bytes(override)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found = _meminfo_available()
    if found is None:  # no /proc (macOS, Windows): free physical pages, if the OS says
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    return found


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def check_memory(config: Config, size: tuple[int, int], device: torch.device) -> None:
    """Raise a one-line NeuralartError if the run at (width, height) cannot fit."""
    free = available(device)
    if free is None:
        warnings.warn(
            f"could not tell how much memory {device} has free; the memory check is skipped "
            f"(set {ENVIRONMENT} to check against a figure of your own)",
            stacklevel=2,
        )
        return
    total, statistics, largest = estimate(config, size)
    if total <= free:
        return
    style = config.style
    worst = f", {largest} the largest" if largest else ""
    raise NeuralartError(
        f"this run needs about {_gib(total)} of memory at {size[0]}x{size[1]} px "
        f"(style statistics {style.statistic}: {_gib(statistics)}{worst}) but {device} has "
        f"{_gib(free)} free; use fewer or shallower style layers or a smaller --size"
    )
