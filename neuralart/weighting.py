"""Gradient masking and amplified activations (docs/method.md §4.1-§4.2).

Both leave the objective's value alone and change only the *style* gradient that reaches
a feature map ``F_l(x)``: it is multiplied element-wise by weights computed once from
the content image's own map ``F_l(c)``,

* ``mask``: 1 where ``F_l(c)`` is among the top ``q_l`` fraction of that layer's
  activations, else 0 (§4.1);
* ``amplify``: ``F_l(c)^p`` (§4.2).

The content term reads the plain feature maps, so its gradient is untouched.
"""

from __future__ import annotations

import typing
from typing import Any

import torch
from torch import Tensor

from neuralart.config import StyleConfig
from neuralart.layers import LAYERS

# docs/method.md §4.1 [decided]: the fraction kept for conv1_1..conv5_1; every layer of a
# block uses its block's value unless style.mask_keep names it.
MASK_KEEP_BY_BLOCK: tuple[float, ...] = (0.5, 0.25, 0.1, 0.05, 0.01)


def mask_keep(style: StyleConfig, layer: str) -> float:
    """The fraction of ``layer``'s activations the mask keeps."""
    chosen = dict(style.mask_keep)
    return chosen.get(layer, MASK_KEEP_BY_BLOCK[LAYERS[layer].block - 1])


def top_fraction_mask(features: Tensor, keep: float) -> Tensor:
    """1 for the ``round(keep·n)`` largest of the n entries of ``features``, else 0.

    Exact: ties at the threshold are broken by position (a stable sort), so the mask
    keeps exactly that many entries, except that it never keeps a zero (or negative)
    activation. A post-ReLU map has many zeros; a threshold ``F ≥ t`` with ``t = 0``
    would keep all of them.
    """
    flat = features.detach().reshape(-1)
    count = min(flat.numel(), max(1, round(keep * flat.numel())))
    order = torch.sort(flat, descending=True, stable=True).indices[:count]
    mask = torch.zeros_like(flat)
    mask[order] = 1.0
    return (mask * (flat > 0)).reshape(features.shape)


def gradient_weights(style: StyleConfig, layer: str, content_features: Tensor) -> Tensor:
    """The weights of the style gradient at ``layer``, from the content image's map."""
    if style.gradient_weighting == "mask":
        return top_fraction_mask(content_features, mask_keep(style, layer))
    return content_features.detach().pow(style.amplify_power)


class _ReweightGradient(torch.autograd.Function):
    """Identity forwards; backwards the incoming gradient times fixed weights."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(weights)
        return features.view_as(features)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (weights,) = ctx.saved_tensors
        return grad * weights, None


def reweight_gradient(features: Tensor, weights: Tensor) -> Tensor:
    """``features`` unchanged; the gradient flowing back through it is ``weights ⊙ grad``."""
    return typing.cast(Tensor, _ReweightGradient.apply(features, weights))
