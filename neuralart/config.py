"""Typed, frozen configuration: the single place where defaults live, with strict validation.

A configuration is built from a nested mapping (defaults < preset < command-line flags,
merged by ``neuralart.presets``). Unknown keys, wrong types and out-of-range values are
errors that name the key and, where one exists, suggest the intended one.
No torch import here: the command line validates before loading the network.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.layers import LAYER_NAMES, expand_layers  # both re-exported

Weighting = Literal["uniform", "geometric"]
Pooling = Literal["average", "max"]
GradientWeighting = Literal["none", "mask", "amplify"]


@dataclass(frozen=True)
class NetworkConfig:
    weights: str = "embedded"  # embedded | torchvision | path to a .pth state dict
    pooling: Pooling = "average"
    normalize: bool = True  # Gatys' normalised network (mean activation 1 per filter)


@dataclass(frozen=True)
class ContentConfig:
    layers: tuple[str, ...] | Literal["all"] = ("conv4_2",)
    weighting: Weighting = "uniform"
    weight: float = 1.0


@dataclass(frozen=True)
class StyleConfig:
    """Which style statistics to match, declaratively.

    ``statistic`` names one entry of the statistic registry (``neuralart.stats``), which
    checks the options that concern it.
    ``layers``: the statistic of each listed layer (or ``all``).
    ``pairs``: cross-layer Grams instead: ``chain`` (the 15 adjacent pairs),
    ``all-to-LAYER`` (LAYER with every layer), or an explicit list of ``[a, b]`` pairs.
    ``statistic: mrf`` matches patches of each listed layer instead (CNN-MRF):
    ``patch_size`` × ``patch_size`` patches on a ``patch_stride`` grid, with
    ``rotated_copies`` and ``scaled_copies`` extra copies of the style image on each side.
    ``statistic: content-aware`` weights each layer's Gram by every channel of the same
    image's ``content_layer`` (paper §4.4); ``statistic: gram-cube`` matches
    Σ_p F_ip F_jp F_kp (§4.5).
    ``statistic: histogram`` adds ``histogram_weight`` times each layer's histogram term
    to its Gram term.
    ``image_scale``: the style image's long edge relative to the output's.
    ``gradient_weighting``: ``mask`` multiplies the style gradient reaching each style
    map by a mask of the content image's top activations (the fraction kept per layer:
    ``mask_keep``, ``[layer, fraction]`` pairs over the paper's defaults), ``amplify`` by
    the content image's activations to the power ``amplify_power`` (§4.1-§4.2).
    """

    statistic: str = "gram"
    layers: tuple[str, ...] | Literal["all"] = (
        "conv1_1",
        "conv2_1",
        "conv3_1",
        "conv4_1",
        "conv5_1",
    )
    pairs: str | tuple[tuple[str, str], ...] | None = None
    shift: float = 0.0
    blur: bool = False
    adjacent: bool = False
    weighting: Weighting = "uniform"
    weight: float = 100.0
    blend: tuple[float, ...] | None = None  # one weight per style image (normalised)
    image_scale: float = 1.0  # style image long edge relative to the output's
    patch_size: int = 3
    patch_stride: int = 2
    rotated_copies: int = 0
    scaled_copies: int = 0
    content_layer: str = "conv4_2"  # content-aware: the "types of content" layer
    gradient_weighting: GradientWeighting = "none"
    mask_keep: tuple[tuple[str, float], ...] = ()  # [layer, fraction] over the defaults
    amplify_power: float = 1.0
    histogram_weight: float = 1.0  # histogram: the histogram term against the Gram term


# Keys renamed in this release: the old name is still read, with a warning, until the next.
RENAMED_KEYS: dict[str, str] = {
    "style.scale": "style.image_scale",
    "style.scales": "style.scaled_copies",
    "style.rotations": "style.rotated_copies",
}


# history: auto keeps up to AUTO_HISTORY L-BFGS steps, fewer where that many would take
# more than HISTORY_BYTES (two float32 vectors of the picture's size per step): 100 up to
# about 0.9 megapixels (1024x768), 28 at 2048x1536.
AUTO_HISTORY = 100
HISTORY_BYTES = 2 << 30

# The automatic coarse-to-fine schedule halves the size until the first level's long edge
# is at most this many pixels.
AUTO_LEVEL_EDGE = 768


@dataclass(frozen=True)
class OptimizerConfig:
    """L-BFGS settings and the coarse-to-fine schedule.

    ``levels``: coarse to fine, level i of L runs at size / 2^(L-1-i); ``auto`` picks as
    many levels as it takes for the first to be at most AUTO_LEVEL_EDGE px long (one level
    up to that size). ``iterations``: a number N runs N at the first level and half as
    many at each finer one (a finer iteration costs four times as much); a list gives each
    level's count, coarse to fine, and then also sets the number of levels.
    """

    iterations: int | tuple[int, ...] = 500
    history: int | Literal["auto"] = "auto"
    learning_rate: float = 1.0
    init: str = "content"  # content | noise | path to an image
    levels: int | Literal["auto"] = "auto"

    def level_count(self, long_edge: int) -> int:
        """The number of levels for an output of this long edge."""
        if isinstance(self.iterations, tuple):
            return len(self.iterations)
        if self.levels != "auto":
            return self.levels
        count, edge = 1, float(long_edge)
        while edge > AUTO_LEVEL_EDGE:
            edge /= 2
            count += 1
        return count

    def history_for(self, values: int) -> int:
        """The L-BFGS steps remembered for a picture of ``values`` numbers (3·W·H)."""
        if self.history != "auto":
            return self.history
        return max(5, min(AUTO_HISTORY, HISTORY_BYTES // (2 * 4 * values)))

    def level_iterations(self, long_edge: int) -> tuple[int, ...]:
        """The iterations of each level, coarse to fine, for an output of this long edge."""
        if isinstance(self.iterations, tuple):
            return self.iterations
        n = self.iterations
        return tuple(
            max(1, round(n / 2**i)) if n else 0 for i in range(self.level_count(long_edge))
        )


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    paper_row: str = ""
    description: str = ""
    size: int = 512  # long edge of the output, in pixels
    tv_weight: float = 0.0
    seed: int | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: the network under autocast
    preserve_color: Literal["none", "luminance", "histogram"] = "none"
    max_pixels: int = 100_000_000  # input images above this many pixels are refused
    # Print sizes: run the network tile by tile. auto: only where the whole picture does
    # not fit the memory there is; off: never; N: tiles of N x N px.
    tile: int | Literal["auto", "off"] = "auto"
    tile_halo: int | Literal["exact"] = "exact"  # px around a tile; exact: the receptive field
    network: NetworkConfig = field(default_factory=NetworkConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (for YAML/JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------ building


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return "a list"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _convert(value, option, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise _Mismatch


def _suggest(word: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def build(cls: type[Any], data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a mapping, strictly."""
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "the configuration"
        raise NeuralartError(f"{where} must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise NeuralartError(f"unknown key {dotted!r}{_suggest(str(key), names)}")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value if value is not None else {}, f"{dotted}.")
            continue
        try:
            kwargs[key] = _convert(value, tp, dotted)
        except _Mismatch:
            raise NeuralartError(f"{dotted} must be {_type_name(tp)}, got {value!r}") from None
    return cls(**kwargs)


def check_layers(layers: typing.Iterable[str], key: str | None = None) -> None:
    """Raise a NeuralartError naming the first unknown layer, with a suggestion."""
    for name in layers:
        if name not in LAYER_NAMES:
            hint = _suggest(name, LAYER_NAMES) or f"; known: {', '.join(LAYER_NAMES)}"
            where = f"{key}: " if key else ""
            raise NeuralartError(f"{where}unknown layer {name!r}{hint}")


def validate(config: Config) -> Config:
    """Range and name checks that the types alone do not express."""
    if config.size <= 0:
        raise NeuralartError(f"size must be a positive number of pixels, got {config.size}")
    if config.max_pixels < 1:
        raise NeuralartError(f"max_pixels must be positive, got {config.max_pixels}")
    if isinstance(config.tile, int) and config.tile < 1:
        raise NeuralartError(f"tile must be auto, off or a number of pixels, got {config.tile}")
    if isinstance(config.tile_halo, int) and config.tile_halo < 0:
        raise NeuralartError(f"tile_halo must be exact or 0 px or more, got {config.tile_halo}")
    opt = config.optimizer
    counts = opt.iterations if isinstance(opt.iterations, tuple) else (opt.iterations,)
    if not counts or min(counts) < 0:
        raise NeuralartError(
            f"iterations must be 0 or more (one number, or one per level), got {opt.iterations}"
        )
    if isinstance(opt.iterations, tuple) and opt.levels not in ("auto", len(opt.iterations)):
        raise NeuralartError(
            f"{len(opt.iterations)} iteration counts were given for {opt.levels} levels; "
            "give one per level, or one number"
        )
    if opt.history != "auto" and opt.history < 1:
        raise NeuralartError(f"optimizer.history must be auto or at least 1, got {opt.history}")
    if config.optimizer.learning_rate <= 0:
        raise NeuralartError("optimizer.learning_rate must be positive")
    for key, value in (
        ("content.weight", config.content.weight),
        ("style.weight", config.style.weight),
        ("style.histogram_weight", config.style.histogram_weight),
        ("tv_weight", config.tv_weight),
    ):
        if value < 0 or value != value or value == float("inf"):
            raise NeuralartError(f"{key} must be a finite number >= 0, got {value}")
    if config.seed is not None and not 0 <= config.seed < 2**63:
        raise NeuralartError(f"seed must be between 0 and 2**63-1, got {config.seed}")
    if opt.levels != "auto" and not 1 <= opt.levels <= 8:
        raise NeuralartError(f"levels must be auto or 1 to 8, got {opt.levels}")
    content_layers = expand_layers(config.content.layers)
    if not content_layers and config.content.weight > 0:
        raise NeuralartError("content.layers is empty; list at least one layer or set weight 0")
    check_layers(content_layers, "content.layers")
    style = config.style
    _validate_style_options(style)
    if style.blend is not None and (min(style.blend, default=0) < 0 or sum(style.blend) <= 0):
        raise NeuralartError(
            f"style.blend must be weights >= 0 with a positive sum, got {list(style.blend)}"
        )
    if not 0.05 <= style.image_scale <= 20:
        raise NeuralartError(
            f"style.image_scale must be between 0.05 and 20, got {style.image_scale}"
        )
    if style.pairs is None:
        check_layers(expand_layers(style.layers), "style.layers")
        if not style.layers and style.weight > 0:
            raise NeuralartError("style.layers is empty; list at least one layer")
    elif isinstance(style.pairs, str):
        pattern = style.pairs
        if pattern != "chain" and not pattern.startswith("all-to-"):
            raise NeuralartError(
                f"style.pairs: unknown pattern {pattern!r}; use 'chain', "
                "'all-to-LAYER' (e.g. all-to-conv4_2) or a list of [layer, layer] pairs"
            )
        if pattern.startswith("all-to-"):
            check_layers([pattern.removeprefix("all-to-")], "style.pairs")
    else:
        if not style.pairs:
            raise NeuralartError("style.pairs is an empty list")
        for pair in style.pairs:
            check_layers(pair, "style.pairs")
    if config.device not in ("auto", "cpu", "mps", "cuda") and not (
        config.device.startswith("cuda:") and config.device[5:].isdigit()
    ):
        raise NeuralartError(
            f"unknown device {config.device!r}; use auto, cpu, cuda, cuda:N or mps"
        )
    return config


def _validate_style_options(style: StyleConfig) -> None:
    """Options every statistic shares: paper §4.1-§4.2 and the content-aware layer."""
    check_layers([style.content_layer], "style.content_layer")
    check_layers([layer for layer, _ in style.mask_keep], "style.mask_keep")
    for layer, keep in style.mask_keep:
        if not 0 < keep <= 1:
            raise NeuralartError(
                f"style.mask_keep: the fraction for {layer} must be above 0 and at most 1, "
                f"got {keep}"
            )
    if not 0 < style.amplify_power <= 8:
        raise NeuralartError(
            f"style.amplify_power must be above 0 and at most 8, got {style.amplify_power}"
        )


def renamed_keys(data: Mapping[str, Any], label: str = "") -> dict[str, Any]:
    """The mapping with keys renamed in this release under their new names (one warning
    each; ``label`` names the file they came from). Giving both names is an error."""
    where = f"{label}: " if label else ""
    out = dict(data)
    for old, new in RENAMED_KEYS.items():
        *parents, old_leaf = old.split(".")
        new_leaf = new.rsplit(".", 1)[-1]
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping) or old_leaf not in node:
            continue
        if new_leaf in node:
            raise NeuralartError(f"{where}{old} is the old name of {new}: give only {new}")
        warnings.warn(
            f"{where}{old} is now called {new}; the old name goes in the next release",
            NeuralartWarning,
            stacklevel=2,
        )
        renamed = {(new_leaf if key == old_leaf else key): value for key, value in node.items()}
        if not parents:
            out = renamed
            continue
        holder = out
        for part in parents[:-1]:
            holder[part] = dict(holder[part])
            holder = holder[part]
        holder[parents[-1]] = renamed
    return out


def config_from_dict(data: Mapping[str, Any]) -> Config:
    return validate(build(Config, renamed_keys(data)))
