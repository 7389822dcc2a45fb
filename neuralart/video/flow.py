"""Optical flow, warping with it, and where it can be trusted.

Conventions used throughout:

* A flow field is an (H, W, 2) float32 array of displacements in pixels, ``flow[y, x] =
  (dx, dy)``: x to the right, y downwards.
* The flow *from frame a to frame b* maps every pixel of a to where it went in b:
  ``a(p) ≈ b(p + flow(p))``. It lives on the pixel grid of a.
* :func:`warp` samples backwards: ``out(p) = image(p + flow(p))``. Warping b with the flow
  from a to b therefore gives a picture in a's coordinates. To carry the previous styled
  frame into the current frame, warp it with the flow from the CURRENT frame to the
  PREVIOUS one (computed on the input frames): ``warp(styled_prev, optical_flow(cur, prev))``.

The reliability weights follow Ruder, Dosovitskiy & Brox (2016), "Artistic style transfer
for videos", who take the thresholds from Sundaram, Brox & Keutzer (2010).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image

from neuralart.errors import NeuralartError
from neuralart.video import require_video

FLOW_METHODS = ("dis", "farneback")

# Thresholds of the consistency check (Sundaram et al. 2010, as used by Ruder et al. 2016).
_DISOCCLUSION_RELATIVE = 0.01
_DISOCCLUSION_ABSOLUTE = 0.5
_BOUNDARY_RELATIVE = 0.01
_BOUNDARY_ABSOLUTE = 0.002

Picture = Image.Image | np.ndarray


def _gray(picture: Picture, name: str) -> np.ndarray:
    """A picture as an (H, W) uint8 gray array (ITU-R 601 luma, as OpenCV computes it)."""
    _, cv2 = require_video()
    if isinstance(picture, Image.Image):
        picture = np.asarray(picture.convert("RGB"))
    array = np.asarray(picture)
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: expected a PIL image or a uint8 array, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 3:
        return np.asarray(cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY))
    if array.ndim == 2:
        return np.ascontiguousarray(array)
    raise ValueError(f"{name}: expected (H, W), (H, W, 1) or (H, W, 3), got {array.shape}")


def optical_flow(a: Picture, b: Picture, method: str = "dis") -> np.ndarray:
    """The dense optical flow from frame ``a`` to frame ``b``: ``a(p) ≈ b(p + flow(p))``.

    ``a`` and ``b`` are RGB (or gray) PIL images or uint8 arrays of the same size; the flow
    is computed on their gray values. ``method`` is "dis" (OpenCV's Dense Inverse Search,
    MEDIUM preset: fast, good on large motion) or "farneback" (OpenCV's polynomial expansion
    method). Returns an (H, W, 2) float32 array of (dx, dy) in pixels on a's grid.

    Raises:
        NeuralartError: unknown method; the frames differ in size.
    """
    if method not in FLOW_METHODS:
        raise NeuralartError(
            f"unknown optical flow method '{method}'; use one of {', '.join(FLOW_METHODS)}"
        )
    _, cv2 = require_video()
    first, second = _gray(a, "a"), _gray(b, "b")
    if first.shape != second.shape:
        (h1, w1), (h2, w2) = first.shape, second.shape
        raise NeuralartError(f"optical flow needs frames of one size, got {w1}x{h1} and {w2}x{h2}")
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(first, second, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(
            first,
            second,
            None,
            pyr_scale=0.5,
            levels=5,
            winsize=15,
            iterations=5,
            poly_n=5,
            poly_sigma=1.1,
            flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN,
        )
    return np.asarray(flow, dtype=np.float32)


def _check_flow(flow: np.ndarray, shape: tuple[int, ...], name: str = "flow") -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"{name}: expected an (H, W, 2) array, got shape {flow.shape}")
    if flow.shape[:2] != shape[:2]:
        raise ValueError(f"{name}: its grid {flow.shape[:2]} differs from the image's {shape[:2]}")
    return flow.astype(np.float32, copy=False)


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The absolute sampling positions p + flow(p) as two float32 maps (x, y)."""
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return xs + flow[:, :, 0], ys + flow[:, :, 1]


def _channel_groups(channels: int) -> list[tuple[int, int]]:
    """Channel ranges for cv2.remap: at most 4 at once, and never 2 (OpenCV 5 samples
    two-channel images along another path, whose weights differ from the others' by up
    to about 1 %), so 6 channels go as 4 + 1 + 1."""
    groups: list[tuple[int, int]] = []
    start = 0
    while start < channels:
        left = channels - start
        size = 4 if left >= 4 else 3 if left == 3 else 1
        groups.append((start, start + size))
        start += size
    return groups


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warping: ``out(p) = image(p + flow(p))``, bilinear, edges replicated.

    ``image`` is an (H, W) or (H, W, C) array (uint8 or float); ``flow`` an (H, W, 2) array
    on the same grid. The result has the image's shape and dtype (uint8 results are
    rounded). Positions that fall outside the image take the value of the nearest edge
    pixel. OpenCV computes the bilinear weights in steps of 1/32 pixel.

    With the flow from frame a to frame b, ``warp(b, flow)`` reproduces a wherever a's
    content is visible in b. So the previous styled frame is brought into the current
    frame's coordinates with the flow from the current frame to the previous one.
    """
    _, cv2 = require_video()
    picture = np.asarray(image)
    flow = _check_flow(flow, picture.shape)
    dtype = picture.dtype
    if dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        picture = picture.astype(np.float32)
    map_x, map_y = _sample_grid(flow)

    def remap(channels: np.ndarray) -> np.ndarray:
        out = cv2.remap(
            np.ascontiguousarray(channels),
            map_x,
            map_y,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return np.asarray(out).reshape(channels.shape)

    if picture.ndim == 2:
        result = remap(picture)
    elif picture.ndim == 3:
        chunks = [remap(picture[:, :, i:j]) for i, j in _channel_groups(picture.shape[2])]
        result = np.concatenate(chunks, axis=2) if len(chunks) > 1 else chunks[0]
    else:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {picture.shape}")
    return result.astype(dtype, copy=False)


def consistency_weights(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Where warping with ``forward`` can be trusted: 1 there, 0 elsewhere, as (H, W) float32.

    The roles of the two flows, for styling frame t with the help of frame t-1:

    * ``forward`` (w) is the flow used for warping: from the current frame t to the
      previous frame t-1, on the grid of frame t. The weights live on that grid too.
    * ``backward`` is the flow in the other direction, from t-1 to t, on the grid of t-1.
      It is looked up where w sends each pixel: ŵ(p) = backward(p + w(p)), bilinearly.

    Where pixel p of frame t was visible in frame t-1, going there and coming back ends
    where it started, so ŵ(p) ≈ -w(p). Following Ruder et al. (2016), who take the test and
    its constants from Sundaram et al. (2010), a pixel gets weight 0 when

    * the round trip fails, a disocclusion (p shows something frame t-1 did not show):
      ``|w + ŵ|² > 0.01 (|w|² + |ŵ|²) + 0.5``;
    * it lies on a motion boundary, where the flow used for warping changes abruptly:
      ``|∇w_x|² + |∇w_y|² > 0.01 |w|² + 0.002``. In the paper this test is written on its
      backward flow, which is the flow that warps frame t-1 into frame t, i.e. our ``w``,
      not the looked-up ŵ. Gradients are central differences (one-sided at the border);
    * p + w(p) falls outside frame t-1 (content that entered the picture): the paper does
      not spell this case out, but frame t-1 has nothing to offer there.

    Both flows are (H, W, 2) arrays of (dx, dy) in pixels, of the same size.
    """
    w = _check_flow(forward, np.shape(forward), "forward")
    other = _check_flow(backward, w.shape, "backward")
    w_hat = warp(other, w)
    height, width = w.shape[:2]
    map_x, map_y = _sample_grid(w)

    round_trip = np.sum((w + w_hat) ** 2, axis=2)
    lengths = np.sum(w**2, axis=2) + np.sum(w_hat**2, axis=2)
    disoccluded = round_trip > _DISOCCLUSION_RELATIVE * lengths + _DISOCCLUSION_ABSOLUTE

    gradient = np.zeros((height, width), np.float32)
    for component in (w[:, :, 0], w[:, :, 1]):
        for axis in (0, 1):
            if component.shape[axis] > 1:
                gradient += np.gradient(component, axis=axis) ** 2
    boundary = gradient > _BOUNDARY_RELATIVE * np.sum(w**2, axis=2) + _BOUNDARY_ABSOLUTE

    outside = (map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)
    return (~(disoccluded | boundary | outside)).astype(np.float32)


def _unit_rgb(picture: Picture) -> np.ndarray:
    """A picture as an (H, W, 3) float32 array in [0, 1]."""
    if isinstance(picture, Image.Image):
        picture = np.asarray(picture.convert("RGB"))
    array = np.asarray(picture)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32)


def _as_uint8(picture: Picture) -> np.ndarray | Image.Image:
    if isinstance(picture, Image.Image):
        return picture
    array = np.asarray(picture)
    if array.dtype == np.uint8:
        return array
    return (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _shape(picture: Picture) -> tuple[int, int]:
    if isinstance(picture, Image.Image):
        return picture.height, picture.width
    height, width = np.shape(picture)[:2]
    return height, width


def warping_error(
    stylised_frames: Iterable[Picture], input_frames: Iterable[Picture], method: str = "dis"
) -> float:
    """How much the styled video flickers: 0 when it moves exactly as the input does.

    For each pair of consecutive frames t-1, t: the flows between input frames t and t-1
    (both directions, ``method`` as in :func:`optical_flow`) give the reliability weights
    c of :func:`consistency_weights`; styled frame t-1, warped into frame t with the flow
    from input frame t to input frame t-1, is compared with styled frame t. The pair's error
    is the c-weighted mean, over pixels and RGB channels on the 0..1 scale, of the absolute
    difference. Returns the mean over all pairs (pairs without any reliable pixel are left
    out; 0.0 if every pair is).

    Frames are RGB PIL images, uint8 arrays, or float arrays in [0, 1]; both sequences are
    consumed in step, one frame at a time.

    Raises:
        NeuralartError: fewer than two frames; the sequences differ in length; a styled
            frame and its input frame differ in size.
    """
    styled_iter, input_iter = iter(stylised_frames), iter(input_frames)
    errors: list[float] = []
    previous: tuple[np.ndarray, Any] | None = None
    pairs = 0
    index = 0
    while True:
        styled, source = next(styled_iter, None), next(input_iter, None)
        if styled is None or source is None:
            if styled is not None or source is not None:
                raise NeuralartError(
                    "warping error needs as many styled frames as input frames; "
                    f"one sequence ends after {index} frames"
                )
            break
        index += 1
        if _shape(styled) != _shape(source):
            (h1, w1), (h2, w2) = _shape(styled), _shape(source)
            raise NeuralartError(
                f"styled frame {index} is {w1}x{h1} but input frame {index} is {w2}x{h2}"
            )
        current = (_unit_rgb(styled), _as_uint8(source))
        if previous is not None:
            pairs += 1
            to_previous = optical_flow(current[1], previous[1], method)
            to_current = optical_flow(previous[1], current[1], method)
            weights = consistency_weights(to_previous, to_current)
            carried = warp(previous[0], to_previous)
            difference = np.abs(current[0] - carried).mean(axis=2)
            total = float(weights.sum())
            if total > 0:
                errors.append(float((weights * difference).sum()) / total)
        previous = current
    if pairs == 0:
        raise NeuralartError(f"warping error needs at least two frames, got {index}")
    return float(np.mean(errors)) if errors else 0.0
