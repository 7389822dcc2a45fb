"""Recompute the committed normalisation factors of the embedded VGG-19 weights.

    .venv/bin/python scripts/calibrate_vgg19.py [--out FILE]

Measures every filter's mean post-ReLU activation (over positions, then over images)
on the calibration photographs (neuralart/calibration.py) with average pooling, and
saves the 5,504 factors. Loading the network with ``normalize=True`` divides each
layer by them (neuralart.vgg.normalise_weights). Needs scikit-image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neuralart.calibration import CALIBRATION_LONG_EDGE, CALIBRATION_PHOTOS, calibration_images
from neuralart.vgg import (
    CAFFE,
    LAYER_NAMES,
    VGG19Features,
    load_embedded_weights,
    measure_filter_means,
)

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "neuralart/data/vgg19_embedded_norm_factors.pt"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    network = VGG19Features(
        load_embedded_weights(), pooling="average", convention=CAFFE, source="embedded"
    )
    images = [CAFFE.to_network(t) for t in calibration_images()]
    factors = measure_filter_means(network, images)
    torch.save(
        {
            "factors": factors,
            "photos": list(CALIBRATION_PHOTOS),
            "long_edge": CALIBRATION_LONG_EDGE,
            "pooling": "average",
        },
        args.out,
    )
    dead = sum(int((factors[n] == 1.0).sum()) for n in LAYER_NAMES)
    count = sum(f.numel() for f in factors.values())
    print(f"wrote {count} factors ({dead} dead filters left unscaled) to {args.out}")
    for name in LAYER_NAMES:
        f = factors[name]
        print(f"  {name}: mean activation {f.mean():.3f} (min {f.min():.3g}, max {f.max():.3g})")


if __name__ == "__main__":
    main()
