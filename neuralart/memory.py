"""A memory check before the first iteration: refuse a run that cannot fit, in one line.

The three-way statistics of paper §4.4-§4.5 hold N²·K entries per layer (0.5 GiB for a
512-channel layer); a run that does not fit would otherwise swap the machine or die in
the middle. :func:`check_memory` estimates the bytes a configuration needs at the
largest level, from the configuration and the picture's size alone (no network, no
tensors), and compares them with what the device has free.

The estimate, in float32 (4 bytes) entries:

* style statistics: 2·ΣE + 3·max E, E the entries of one term's statistic: every term
  keeps its target and its difference from the picture's statistic until the backward
  pass; the term being formed or differentiated holds up to three more of its size; plus
  the largest scratch a term uses (the three-way statistics' blocks);
* the network: NETWORK_FACTOR × Σ N_l·H_l·W_l over the layers it runs (the maps kept
  for the backward pass, and the gradients the backward pass holds for a while), plus
  its weights;
* the content targets (one map per content layer), and the feature-sized copies each
  style term keeps (each statistic's ``memory``, :mod:`neuralart.stats`);
* L-BFGS: two vectors of the picture's size per remembered step.

Measured against whole runs (``python -m benchmarks.memory``, BENCHMARKS.md) the
estimate is 1.1–1.2 times the peak resident memory of classic and chain-blurred at 512,
1024 and 2048 px.
``NEURALART_MEMORY_AVAILABLE`` (bytes, or a number with K, M, G or T) replaces the free
memory measured on the device: to test the check, or to keep a run within a budget.
"""

from __future__ import annotations

import os
import re
import warnings

import torch

from neuralart.config import Config
from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.layers import LAYER_NAMES, LAYERS
from neuralart.losses import content_terms, network_layers
from neuralart.stats import statistic_for, style_terms

FLOAT = 4  # bytes
WEIGHT_BYTES = 2 * 20_024_384 * FLOAT  # the 16 convolutions' parameters, loaded and in use
OVERHEAD = 768 << 20  # the Python process with torch loaded, its buffers, the images
NETWORK_FACTOR = 2.0  # feature maps' worth the network holds at its peak (BENCHMARKS.md)
ENVIRONMENT = "NEURALART_MEMORY_AVAILABLE"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def estimate(config: Config, size: tuple[int, int]) -> tuple[int, int, str]:
    """(bytes in all, bytes of the style statistics, the largest term) at (width, height)."""
    width, height = size
    statistic = statistic_for(config.style)
    terms = style_terms(config.style)
    uses = {t.label: statistic.memory(config.style, t, height, width) for t in terms}
    largest = max(uses, key=lambda label: uses[label].statistic, default="")
    entries = [use.statistic for use in uses.values()]
    scratch = max((use.scratch for use in uses.values()), default=0)
    statistics = FLOAT * (2 * sum(entries) + 3 * max(entries, default=0) + scratch)
    content = [name for name, _ in content_terms(config.content)]
    read = network_layers(config.content, config.style, with_content=True)
    deepest = LAYERS[read[-1]].index if read else -1
    # The network keeps each map it runs for the backward pass, and the backward pass
    # holds gradients of about the same size for a while: NETWORK_FACTOR (measured) maps.
    run = LAYER_NAMES[: deepest + 1]
    maps = NETWORK_FACTOR * sum(LAYERS[n].entries(height, width) for n in run)
    maps += sum(LAYERS[n].entries(height, width) for n in content)  # the content targets
    maps += sum(use.copies for use in uses.values())
    if config.style.gradient_weighting != "none":  # the fixed weights, one per style map
        styled = {name for t in terms for name in t.layers}
        maps += sum(LAYERS[n].entries(height, width) for n in styled)
    values = 3 * height * width
    counts = config.optimizer.level_iterations(max(size))
    kept = min(config.optimizer.history_for(values), max(1, counts[-1]))
    lbfgs = 2 * (kept + 3) * values * FLOAT  # the pairs, and the current and last x and g
    total = statistics + int(FLOAT * maps) + lbfgs + WEIGHT_BYTES + OVERHEAD
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
            NeuralartWarning,
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
