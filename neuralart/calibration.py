"""The calibration images for Gatys' normalisation (docs/method.md §1).

A fixed list of natural photographs shipped inside scikit-image's wheel
(``skimage/data``), each resized to a 256-px long edge. scikit-image is needed only
to (re)compute normalisation factors: the factors of the embedded weights are committed
(``neuralart/data/vgg19_embedded_norm_factors.pt``, made by
``scripts/calibrate_vgg19.py``), so ordinary use never touches these photos.
"""

from __future__ import annotations

import importlib.resources
import warnings

from torch import Tensor

from neuralart.errors import NeuralartError, NeuralartWarning

# [decided] Every colour (RGB or RGBA) image in skimage/data: 14 images. Photographs
# alone leave a few conv1_1 filters tuned to saturated colours nearly unexcited, so
# paintings would excite them ~2x more than "mean 1"; the wheel's colour charts (color,
# phantom, chessboard, logo) cover those colours. On the 8 held-out photographs and
# paintings of tests/data every layer's mean activation then lies in 0.99-1.30, except
# conv5_4 at 1.59 (tests/test_vgg.py).
CALIBRATION_PHOTOS: tuple[str, ...] = (
    "astronaut.png", "chelsea.png", "chessboard_RGB.png", "coffee.png", "color.png",
    "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "motorcycle_right.png",
    "phantom.png", "retina.jpg", "rocket.jpg", "horse.png", "logo.png",
)  # fmt: skip
CALIBRATION_LONG_EDGE = 256


def calibration_images() -> list[Tensor]:
    """The calibration photos as (1, 3, H, W) RGB tensors in [0, 1]."""
    from neuralart.images import image_to_tensor, load_image, resize_long_edge

    try:
        folder = importlib.resources.files("skimage") / "data"
    except ModuleNotFoundError as exc:
        raise NeuralartError(
            "normalising these weights measures them on scikit-image's photographs: "
            "install scikit-image, or pass --no-normalize"
        ) from exc
    tensors = []
    for name in CALIBRATION_PHOTOS:
        with importlib.resources.as_file(folder / name) as path, warnings.catch_warnings():
            warnings.simplefilter("ignore", NeuralartWarning)  # RGBA composited on white
            image = resize_long_edge(load_image(path), CALIBRATION_LONG_EDGE)
        tensors.append(image_to_tensor(image))
    return tensors
