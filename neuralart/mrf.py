"""The CNN-MRF style energy of Li & Wand (2016), as their code ran it (docs/method.md §6).

Every 3×3×C patch of the synthesised features (on a stride-2 grid) is matched to the
style patch with the highest normalised cross-correlation; the energy is the squared
distance to the matched patches. Matching is a convolution of the features with the
L2-normalised style patches, evaluated in chunks of style patches so that memory stays
bounded, and the match is held fixed for the gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

# Bytes of matching scores held at once (one chunk of style patches × all positions).
CHUNK_BYTES = 256 * 2**20


def extract_patches(features: Tensor, size: int = 3, stride: int = 1) -> Tensor:
    """(1, C, H, W) -> (P, C, size, size): every patch on a ``stride`` grid, row-major."""
    channels = features.shape[1]
    cols = F.unfold(features, kernel_size=size, stride=stride)  # (1, C·size², P)
    return cols[0].transpose(0, 1).reshape(-1, channels, size, size)


def normalise_patches(patches: Tensor, eps: float = 1e-8) -> Tensor:
    """Each patch divided by its L2 norm (a zero patch stays zero)."""
    norms = patches.flatten(1).norm(dim=1).clamp_min(eps)  # (P,)
    return patches / norms.view(-1, 1, 1, 1)


def match_patches(
    features: Tensor, normalised: Tensor, *, stride: int = 2, chunk: int | None = None
) -> Tensor:
    """For each patch of ``features`` (stride grid), the index of the best style patch.

    ``normalised``: (P, C, k, k) L2-normalised style patches. The normalised
    cross-correlation of an x patch with style patch j is <x, s_j/|s_j|> / |x|; |x| is
    the same for every j, so the argmax needs only the convolution with the normalised
    patches. Returns (L,) indices, L the number of x patches in row-major order.
    """
    size = normalised.shape[-1]
    x = features.detach()
    out_h = (x.shape[-2] - size) // stride + 1
    out_w = (x.shape[-1] - size) // stride + 1
    positions = out_h * out_w
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // (4 * max(positions, 1)))
    best = torch.full((positions,), -math.inf, device=x.device, dtype=x.dtype)
    best_index = torch.zeros(positions, device=x.device, dtype=torch.long)
    for start in range(0, normalised.shape[0], chunk):
        bank = normalised[start : start + chunk].to(x.dtype)
        scores = F.conv2d(x, bank, stride=stride)[0].reshape(bank.shape[0], -1)  # (c, L)
        value, index = scores.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        best_index = torch.where(better, index + start, best_index)
    return best_index


def mrf_energy(
    features: Tensor,
    patches: Tensor,
    normalised: Tensor,
    *,
    stride: int = 2,
    chunk: int | None = None,
) -> Tensor:
    """Mean squared distance of each x patch to its matched style patch.

    The match is recomputed here (every evaluation) and treated as a constant.
    """
    size = patches.shape[-1]
    index = match_patches(features, normalised, stride=stride, chunk=chunk)
    cols = F.unfold(features, kernel_size=size, stride=stride)[0].transpose(0, 1)  # (L, C·k²)
    target = patches.flatten(1)[index]  # (L, C·k²)
    return (cols - target).pow(2).mean()


def style_variants(
    image: Image.Image, rotations: int = 0, scales: int = 0
) -> list[tuple[Image.Image, float]]:
    """The style image and its rotated (±k·π/24) and scaled (×1.05^±k) copies, each with
    its scale relative to the image, in that order: the image, the rotations (−, + for
    k = 1, 2, ...), the scales (×1.05^k, ×1.05^−k for k = 1, 2, ...).

    A scaled copy is the image itself with its factor: it is resized once, to the factor
    times the style size of the level. A rotated copy is cropped to the largest centred
    rectangle of the same aspect ratio that holds no corner fill; at the image's own
    resolution, its relative scale is its long edge over the image's.
    """
    variants = [(image, 1.0)]
    w, h = image.size
    for k in range(1, rotations + 1):
        for sign in (-1, 1):
            angle = sign * k * 180.0 / 24.0
            turned = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
            theta = math.radians(abs(angle))
            # Largest centred w'×h' (same aspect) inside the rotated w×h frame.
            factor = 1.0 / (math.cos(theta) + math.sin(theta) * max(w / h, h / w))
            cw, ch = max(1, int(w * factor)), max(1, int(h * factor))
            left, top = (w - cw) // 2, (h - ch) // 2
            crop = turned.crop((left, top, left + cw, top + ch))
            variants.append((crop, max(cw, ch) / max(w, h)))
    for k in range(1, scales + 1):
        variants.extend((image, factor) for factor in (1.05**k, 1.05**-k))
    return variants
