"""Building blocks for styling videos with temporal consistency.

After Ruder, Dosovitskiy & Brox (2016), "Artistic style transfer for videos": each frame is
styled in turn and kept close to the previous styled frame, carried over by optical flow,
wherever the flow can be trusted. This package holds the parts that know nothing about
styling: :mod:`neuralart.video.io` decodes and encodes videos and frame folders, and
:mod:`neuralart.video.flow` computes optical flow, warps pictures with it and says where it
is reliable.

PyAV and OpenCV are optional dependencies. They are imported only inside the functions that
need them, through :func:`require_video`, so the rest of neuralart works without them.
"""

from __future__ import annotations

from types import ModuleType

from neuralart.errors import NeuralartError

INSTALL_HINT = "video needs the optional packages: pip install 'neuralart[video]'"


def require_video() -> tuple[ModuleType, ModuleType]:
    """Import and return ``(av, cv2)``: PyAV and OpenCV.

    Raises:
        NeuralartError: either package is not installed (or cannot be imported).
    """
    try:
        import av
        import cv2
    except ImportError as exc:
        raise NeuralartError(INSTALL_HINT) from exc
    return av, cv2
