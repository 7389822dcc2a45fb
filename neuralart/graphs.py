"""The iteration captured as a CUDA graph: the objective and its gradient replayed.

Within a level the picture has a fixed shape and lives in one tensor that L-BFGS updates,
so the evaluation of an iteration (the network's forward pass, the statistics, the
losses, the backward pass to the picture) launches the same kernels on the same shapes
every time. On a GPU the launches, about a thousand small kernels an iteration, cost
more than the arithmetic at 512 px. :class:`CapturedObjective` records them once per level
into a CUDA graph and replays the graph: one launch an iteration.

What stays outside: everything data-dependent or done once (the targets, top-fraction
masks and other weights are built when the objective is made, before the capture), the
L-BFGS update (a handful of large matrix products already, with a host read of one
number), and the final evaluation without a gradient. The picture is copied into the
graph's input tensor before each replay; the terms, total and gradient handed back are
the graph's output tensors, valid until the next replay (L-BFGS copies what it keeps).

The capture is used on CUDA only, for a level evaluated whole (a tiled level calls back
between tiles), in float32 (bf16 autocast keeps a cache of cast weights that a capture
must not hold). When the capture fails (an operation that cannot be captured, a
driver that refuses) the level runs eagerly, as before, after one warning line; the
results are the same either way. ``NEURALART_CUDA_GRAPHS=off`` turns the capture off.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from neuralart.errors import NeuralartWarning
from neuralart.optimize import Evaluator

# Evaluations on a side stream before the capture: cuDNN's algorithm search, cuBLAS's
# workspaces and autograd's first-call set-up must not happen inside it.
WARMUP = 3
SWITCH = "NEURALART_CUDA_GRAPHS"


class CapturedObjective:
    """``value_and_grad`` replayed from a CUDA graph; ``value`` stays eager."""

    def __init__(self, objective: Evaluator, x: Tensor) -> None:
        self.objective = objective
        self.x = x.detach().clone()  # the graph's input: each evaluation copies into it
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP):
                objective.value_and_grad(self.x)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.terms, self.total, self.grad = objective.value_and_grad(self.x)

    def value_and_grad(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        self.x.copy_(x)
        self.graph.replay()
        return dict(self.terms), self.total, self.grad

    def value(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        return self.objective.value(x)


def wanted(device: torch.device, precision: str, tiled: bool) -> bool:
    """Whether a level is worth capturing here (see the module's notes)."""
    if os.environ.get(SWITCH, "auto").strip().lower() in ("off", "0", "no", "false"):
        return False
    return device.type == "cuda" and precision == "fp32" and not tiled


def captured(objective: Evaluator, x: Tensor, precision: str, tiled: bool) -> Evaluator:
    """The objective replayed from a CUDA graph where that is possible, else itself."""
    if not wanted(x.device, precision, tiled):
        return objective
    try:
        return CapturedObjective(objective, x)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"could not capture the iteration as a CUDA graph ({text}); running it eagerly",
            NeuralartWarning,
            stacklevel=2,
        )
        torch.cuda.synchronize(x.device)
        return objective
