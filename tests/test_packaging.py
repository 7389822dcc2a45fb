"""The wheel carries the presets and the normalisation factors (non-editable installs)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_contains_every_preset_and_the_factors(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("neuralart-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = sorted(p.relative_to(REPO / "presets") for p in (REPO / "presets").rglob("*.yaml"))
    assert presets, "no presets found in the repository"
    for rel in presets:
        assert f"neuralart/bundled_presets/{rel.as_posix()}" in names
    assert "neuralart/data/vgg19_embedded_norm_factors.pt" in names
    assert "neuralart/cli/commands.py" in names
