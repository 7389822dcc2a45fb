"""The defaults of ``neuralart video``, without heavy imports (the help reads them).

docs/video.md records the measurements behind the temporal weight and the iterations.
"""

from __future__ import annotations

# Weight of the temporal term (Ruder et al. 2016) against content weight 1 and the
# preset's style weight; the term is a mean of squared differences in [0, 1] pixel units.
DEFAULT_TEMPORAL_WEIGHT = 200.0

# L-BFGS iterations of each frame after the first, which starts from the warped one before.
DEFAULT_FRAME_ITERATIONS = 100

# The frame rate of a video made from a folder of frames, unless --fps says otherwise.
DEFAULT_FPS = 25

# The default work folder of a video output: beside it, its name without the suffix and
# this after it (out.mp4 -> out_frames), as transfer's --frames-dir.
WORK_SUFFIX = "_frames"
