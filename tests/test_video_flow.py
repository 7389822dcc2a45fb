"""Optical flow, warping and reliability weights, with the real OpenCV on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from neuralart.errors import NeuralartError

pytest.importorskip("cv2")

from neuralart.video.flow import (
    consistency_weights,
    optical_flow,
    warp,
    warping_error,
)

HEIGHT, WIDTH = 48, 64
DX, DY = 3, 2  # the content of b is a's, moved 3 px right and 2 px down
MARGIN = 8  # the interior, away from edges where content enters or leaves


def texture(height: int, width: int, seed: int, cell: int = 5) -> np.ndarray:
    """A smooth random colour picture (upscaled noise) as an (H, W, 3) uint8 array."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // cell + 1, width // cell + 1, 3), dtype=np.uint8)
    big = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(big)


def shifted_pair(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Frames a and b = a moved by (DX, DY), cut from one larger picture."""
    scene = texture(HEIGHT + 40, WIDTH + 40, seed)
    top, left = 20, 20
    a = scene[top : top + HEIGHT, left : left + WIDTH]
    b = scene[top - DY : top - DY + HEIGHT, left - DX : left - DX + WIDTH]
    assert np.array_equal(b[DY:, DX:], a[:-DY, :-DX])
    return a, b


def interior(array: np.ndarray) -> np.ndarray:
    return array[MARGIN:-MARGIN, MARGIN:-MARGIN]


def naive_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """out(p) = image(p + flow(p)), bilinear, positions clamped to the image: slow but plain."""
    height, width = image.shape[:2]
    out = np.zeros(image.shape, np.float64)
    for y in range(height):
        for x in range(width):
            sx = min(max(x + float(flow[y, x, 0]), 0.0), width - 1.0)
            sy = min(max(y + float(flow[y, x, 1]), 0.0), height - 1.0)
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
            fx, fy = sx - x0, sy - y0
            top = (1 - fx) * image[y0, x0] + fx * image[y0, x1]
            bottom = (1 - fx) * image[y1, x0] + fx * image[y1, x1]
            out[y, x] = (1 - fy) * top + fy * bottom
    return out


def moving_square(x: int) -> np.ndarray:
    """A textured 16x16 square at column x, row 16, over a still textured background."""
    frame = texture(HEIGHT, WIDTH, seed=3).copy()
    frame[16:32, x : x + 16] = texture(16, 16, seed=4, cell=3)
    return frame


# --- optical flow -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_of_a_translation_is_the_shift(method):
    a, b = shifted_pair()
    flow = optical_flow(a, b, method)
    assert flow.shape == (HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    inner = interior(flow)
    assert np.median(inner[..., 0]) == pytest.approx(DX, abs=0.1)
    assert np.median(inner[..., 1]) == pytest.approx(DY, abs=0.1)
    assert np.abs(inner - (DX, DY)).mean() < 0.1
    # The other direction is the opposite shift.
    back = interior(optical_flow(b, a, method))
    assert np.abs(back - (-DX, -DY)).mean() < 0.1


def test_flow_accepts_pil_images_and_gray_arrays():
    a, b = shifted_pair()
    from_pil = optical_flow(Image.fromarray(a), Image.fromarray(b))
    assert np.array_equal(from_pil, optical_flow(a, b))
    gray = optical_flow(np.asarray(Image.fromarray(a).convert("L")), b)
    assert np.abs(interior(gray) - (DX, DY)).mean() < 0.1


def test_flow_refusals():
    a, b = shifted_pair()
    with pytest.raises(NeuralartError, match="unknown optical flow method 'raft'"):
        optical_flow(a, b, "raft")
    with pytest.raises(NeuralartError, match="one size, got 64x48 and 32x48"):
        optical_flow(a, b[:, :32])


# --- warping ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_warping_b_with_the_flow_from_a_to_b_gives_a(method):
    a, b = shifted_pair()
    flow = optical_flow(a, b, method)
    rebuilt = warp(b, flow)
    assert rebuilt.dtype == np.uint8 and rebuilt.shape == a.shape
    error = np.abs(interior(rebuilt).astype(float) - interior(a))
    assert error.mean() < 1.0  # levels of 0..255
    untouched = np.abs(interior(b).astype(float) - interior(a)).mean()
    assert untouched > 10  # the frames really differ


def test_previous_frame_is_carried_into_the_current_with_current_to_previous_flow():
    """The convention the video loop relies on, and the mistake it must not make."""
    previous, current = shifted_pair(seed=5)
    carried = warp(previous, optical_flow(current, previous))
    assert np.abs(interior(carried).astype(float) - interior(current)).mean() < 1.0
    wrong = warp(previous, optical_flow(previous, current))
    assert np.abs(interior(wrong).astype(float) - interior(current)).mean() > 10


def test_integer_flow_moves_pixels_exactly():
    image = texture(HEIGHT, WIDTH, seed=6)
    flow = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    flow[..., 0], flow[..., 1] = -DX, -DY  # out(p) = image(p - (DX, DY))
    out = warp(image, flow)
    assert np.array_equal(out[DY:, DX:], image[:-DY, :-DX])
    # Outside the picture the edge is replicated.
    assert np.array_equal(out[:DY, DX:], np.repeat(image[:1, :-DX], DY, axis=0))


def test_warp_matches_a_plain_bilinear_reference():
    rng = np.random.default_rng(8)
    image = texture(24, 32, seed=9).astype(np.float32) / 255
    ys, xs = np.mgrid[0:24, 0:32].astype(np.float32)
    flow = np.stack([3 * np.sin(ys / 5) + 0.37, 2 * np.cos(xs / 7) - 0.61], axis=2)
    flow += rng.uniform(-0.5, 0.5, flow.shape)
    flow[:3, :3] = -10  # some positions far outside the picture
    expected = naive_warp(image, flow)
    out = warp(image, flow.astype(np.float32))
    assert out.dtype == np.float32
    # OpenCV rounds sampling positions to 1/32 pixel.
    assert np.abs(out - expected).max() < 0.02
    assert np.abs(out - expected).mean() < 0.003
    assert np.abs(image - expected).mean() > 0.05  # the flow did move things


def test_warp_keeps_shape_for_gray_and_many_channels():
    rng = np.random.default_rng(10)
    flow = rng.uniform(-2, 2, (HEIGHT, WIDTH, 2)).astype(np.float32)
    gray = rng.uniform(0, 1, (HEIGHT, WIDTH))
    assert warp(gray, flow).shape == (HEIGHT, WIDTH)
    stack = rng.uniform(0, 1, (HEIGHT, WIDTH, 6)).astype(np.float32)
    out = warp(stack, flow)
    assert out.shape == (HEIGHT, WIDTH, 6)
    for channel in (0, 5):  # the channels beyond OpenCV's four come out right too
        assert np.allclose(out[..., channel], warp(stack[..., channel], flow))
    with pytest.raises(ValueError, match="grid"):
        warp(gray, flow[:10])


# --- reliability weights ----------------------------------------------------------------


def test_weights_are_one_inside_a_pure_translation_and_zero_where_content_entered():
    current, previous = shifted_pair()  # previous = current moved by (DX, DY)
    to_previous = optical_flow(current, previous)
    to_current = optical_flow(previous, current)
    weights = consistency_weights(to_previous, to_current)
    assert weights.shape == (HEIGHT, WIDTH) and weights.dtype == np.float32
    assert set(np.unique(weights)) <= {0.0, 1.0}
    assert interior(weights).min() == 1.0
    # Exact flows: the last DX columns and DY rows map outside the previous frame.
    exact = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    exact[..., 0], exact[..., 1] = DX, DY
    weights = consistency_weights(exact, -exact)
    assert weights[:, -DX:].max() == 0 and weights[-DY:, :].max() == 0
    assert weights[:-DY, :-DX].min() == 1.0


def exact_square_flows(old_x: int, new_x: int) -> tuple[np.ndarray, np.ndarray]:
    """The true flows of moving_square(old_x) -> moving_square(new_x), both directions."""
    to_previous = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    to_previous[16:32, new_x : new_x + 16, 0] = old_x - new_x
    to_current = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    to_current[16:32, old_x : old_x + 16, 0] = new_x - old_x
    return to_previous, to_current


def test_uncovered_background_is_a_disocclusion_with_exact_flows():
    # The square moves from column 20 to 24: columns 20..23 of the current frame show
    # background that the square hid in the previous frame.
    to_previous, to_current = exact_square_flows(20, 24)
    weights = consistency_weights(to_previous, to_current)
    assert weights[16:32, 20:24].max() == 0  # uncovered strip
    assert weights[18:30, 27:37].min() == 1  # inside the square, away from its edges
    assert weights[:, 48:60].min() == 1  # still background
    assert weights[2:12, 4:60].min() == 1
    # The square's left and right edges are motion boundaries of the warping flow.
    assert weights[24, 24] == 0 and weights[24, 39] == 0
    # Swapping the roles of the flows puts the hole somewhere else: the order matters.
    swapped = consistency_weights(to_current, to_previous)
    assert swapped[16:32, 36:40].max() == 0
    assert swapped[18:30, 21:24].min() == 1  # (column 20 is the square's edge there)


def test_uncovered_background_is_found_with_estimated_flows():
    previous, current = moving_square(20), moving_square(24)
    weights = consistency_weights(optical_flow(current, previous), optical_flow(previous, current))
    assert weights[18:30, 20:24].mean() < 0.2
    assert weights[4:44, 48:60].mean() > 0.95
    assert weights[4:12, 4:60].mean() > 0.95


def test_motion_boundaries_come_from_the_warping_flow():
    """A kink in the other flow alone is no motion boundary; one in the warping flow is."""
    still = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    kinked = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    kinked[:, WIDTH // 2 :, 0] = 0.3  # too small to fail the round trip, steep enough to count
    assert consistency_weights(still, kinked).min() == 1.0
    weights = consistency_weights(kinked, -kinked)
    assert weights[:, WIDTH // 2 - 1 : WIDTH // 2 + 1].max() == 0
    assert weights[:, : WIDTH // 2 - 2].min() == 1.0
    assert weights[:, WIDTH // 2 + 2 : -1].min() == 1.0


# --- warping error ----------------------------------------------------------------------


def panning_clip(frames: int = 6) -> list[np.ndarray]:
    scene = texture(HEIGHT + 3 * frames, WIDTH + 2 * frames, seed=11)
    return [scene[3 * t : 3 * t + HEIGHT, 2 * t : 2 * t + WIDTH] for t in range(frames)]


def test_warping_error_is_zero_for_styling_that_moves_with_the_input():
    clip = panning_clip()
    styled = [255 - frame for frame in clip]  # a "style" that commutes with motion
    steady = warping_error(styled, clip)
    assert 0 <= steady < 0.005
    as_floats = [frame.astype(np.float32) / 255 for frame in styled]
    assert warping_error(as_floats, [Image.fromarray(f) for f in clip]) == pytest.approx(steady)
    rng = np.random.default_rng(12)
    noise = [rng.integers(0, 256, frame.shape, dtype=np.uint8) for frame in clip]
    assert warping_error(noise, clip) > 0.2
    flicker = [
        np.clip(f.astype(int) + (15 if t % 2 else -15), 0, 255) for t, f in enumerate(styled)
    ]
    flickering = warping_error([f.astype(np.uint8) for f in flicker], clip)
    assert 0.05 < flickering < 0.2


def test_warping_error_refusals():
    clip = panning_clip(3)
    with pytest.raises(NeuralartError, match="at least two frames, got 1"):
        warping_error(clip[:1], clip[:1])
    with pytest.raises(NeuralartError, match="as many styled frames as input frames"):
        warping_error(clip, clip[:2])
    with pytest.raises(NeuralartError, match="styled frame 1 is 32x48 but input frame 1 is 64x48"):
        warping_error([f[:, :32] for f in clip], clip)
