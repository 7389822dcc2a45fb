"""`--ray`: a batch on a real local Ray cluster (started by the command, as a user's would
be), a worker killed in the middle of a picture, and the refusals that need no cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, error_line
from PIL import Image
from typer.testing import CliRunner

from neuralart.cli import app
from neuralart.cli.commands import fill_optional_values
from neuralart.cli.raybatch import Cluster, check_address, plan_workers
from neuralart.errors import NeuralartError
from neuralart.images import load_image, resize_long_edge, save_image

runner = CliRunner()
NEURALART = [sys.executable, "-m", "neuralart"]
STYLE = DATA / "starry_night.jpg"
NAMES = ["china", "flower", "grace_hopper", "raccoon", "shipwreck", "woman_with_a_hat"]
# Small pictures, but enough iterations that a picture takes a second or two: time to
# find the worker painting it and kill it.
RUN = ["--size", "48", "--iterations", "30", "--seed", "0", "--preset", "classic"]


def have_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


needs_ray = pytest.mark.skipif(
    not have_ray(),
    reason="Ray is not installed here (pip install 'neuralart[ray]'; make install does)",
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in NAMES:
        save_image(resize_long_edge(load_image(DATA / f"{name}.jpg"), 48), folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def local_outputs(photos, tmp_path_factory) -> Path:
    """The plain batch's outputs, one torch thread as each Ray worker has on 2 CPUs."""
    out = tmp_path_factory.mktemp("local")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["transfer", str(photos), str(STYLE), "--out-dir", str(out), "-q", *RUN]
    subprocess.run([*NEURALART, *args], env=env, check=True, timeout=600)
    assert len(list(out.glob("*.png"))) == len(NAMES)
    return out


def ray_batch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The command as a user runs it: its own process, its own local cluster."""
    return subprocess.Popen(
        [*NEURALART, "transfer", *args, *RUN, "--ray"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def assert_same_pictures(folder: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.glob("*.png"))
    assert sorted(p.name for p in folder.glob("*.png")) == names
    for name in names:  # the same seed, network and thread count: the same picture
        assert np.abs(pixels(folder / name) - pixels(reference / name)).max() <= 1, name


def painting_workers() -> list[int]:
    """Ray workers in the middle of a picture (Ray names the process after the call)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].strip()
        except OSError:
            continue
        if title.startswith(b"ray::Painter.paint"):
            found.append(int(entry.name))
    return found


@needs_ray
def test_ray_batch_writes_every_picture_as_the_local_batch_does(photos, local_outputs, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in photos.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"not a picture")  # fails alone; the rest go on
    out = tmp_path / "out"
    proc = ray_batch(str(folder), str(STYLE), "--out-dir", str(out), "--json")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(Path(line["output"]).name for line in lines) == sorted(
        p.name for p in local_outputs.glob("*.png")
    )
    assert all(line["iterations"] == 30 and line["preset"] == "classic" for line in lines)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, stderr
    assert "broken.png" in errors[0]
    assert errors[1] == "error: 1 of 7 content images failed"
    assert_same_pictures(out, local_outputs)


@needs_ray
def test_a_worker_killed_mid_picture_is_replaced_and_its_picture_retried(
    photos, local_outputs, tmp_path
):
    out = tmp_path / "out"
    proc = ray_batch(str(photos), str(STYLE), "--out-dir", str(out))
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        busy = painting_workers()
        if busy:
            time.sleep(0.4)  # well into the picture (each takes a second or two)
            if busy[0] in painting_workers():
                os.kill(busy[0], signal.SIGKILL)
                killed = busy[0]
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=600)
    assert killed is not None, f"no worker was seen painting: {stderr}"
    assert proc.returncode == 0, stderr
    assert "was lost" in stderr and "retried on another worker" in stderr, stderr
    assert not list(out.glob(".*")), "a partial file was left behind"
    assert_same_pictures(out, local_outputs)


@needs_ray
def test_a_rerun_with_skip_existing_paints_only_what_is_missing(photos, local_outputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for p in local_outputs.glob("*.png"):
        (out / p.name).write_bytes(p.read_bytes())
    missing = sorted(out.glob("*.png"))[:2]
    for p in missing:
        p.unlink()
    args = ["--out-dir", str(out), "--skip-existing", "--json", "--shard", "1/1"]
    proc = ray_batch(str(photos), str(STYLE), *args, "--ray-workers", "1")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    painted = sorted(Path(line["output"]).name for line in lines if "iterations" in line)
    assert painted == [p.name for p in missing]
    assert sum(1 for line in lines if line.get("skipped") is True) == len(NAMES) - 2
    assert lines[-1] == {"shard": "1/1", "done": 2, "skipped": 4, "failed": 0, "total": 6}
    assert "1 worker, 2 CPUs each" in stderr  # one worker gets both CPUs of the cluster
    # Two threads: sums round differently and 30 iterations amplify it; still the same
    # picture, far closer to its own reference than to another photograph's.
    a, b = missing
    own = np.abs(pixels(a) - pixels(local_outputs / a.name)).mean()
    assert own < 8.0
    other = local_outputs / b.name
    if pixels(other).shape == pixels(a).shape:
        assert own < np.abs(pixels(a) - pixels(other)).mean() / 3


# ----------------------------------------------------------------- no cluster needed


def test_ray_alone_means_a_local_cluster_and_an_address_joins_one():
    args = ["transfer", "in", "style.jpg", "--ray"]
    assert fill_optional_values(args) == ["transfer", "in", "style.jpg", "--ray=local"]
    args = ["transfer", "in", "style.jpg", "--ray", "--out-dir", "out"]
    assert fill_optional_values(args)[3] == "--ray=local"
    args = ["transfer", "in", "style.jpg", "--ray", "10.0.0.5:6379"]
    assert fill_optional_values(args) == args
    assert check_address("10.0.0.5:6379") == "10.0.0.5:6379"
    assert check_address("ray://head.cluster:10001") == "ray://head.cluster:10001"
    assert check_address("auto") == "auto"


def test_ray_before_the_images_does_not_take_one_for_its_address(photos):
    args = ["transfer", "--ray", str(photos), str(STYLE)]
    assert fill_optional_values(args) == ["transfer", "--ray=local", str(photos), str(STYLE)]
    assert fill_optional_values(["--ray", "auto"]) == ["--ray", "auto"]
    with pytest.raises(NeuralartError, match="put --ray after the images"):
        check_address(str(photos))
    result = runner.invoke(app, ["transfer", str(photos), str(STYLE), "--ray=photos"])
    assert result.exit_code == 1
    assert "is not a cluster address" in error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray"], "--ray spreads a batch"),
        (["--ray-workers", "2"], "--ray-workers is for a batch run with --ray"),
    ],
)
def test_ray_options_that_need_a_batch(args, message, tmp_path):
    photo = DATA / "china.jpg"
    result = runner.invoke(
        app, ["transfer", str(photo), str(STYLE), *args, "-o", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 1
    assert message in error_line(result)


@pytest.mark.parametrize("url", ["s3://bucket/styled", "gs://bucket/out", "az://c/out"])
def test_an_object_store_out_dir_is_refused(url, photos):
    result = runner.invoke(app, ["transfer", str(photos), str(STYLE), "--out-dir", url, "--ray"])
    assert result.exit_code == 1
    line = error_line(result)
    assert "object stores are not supported" in line and "shared filesystem" in line


def test_without_ray_installed_the_command_says_how_to_get_it(photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    args = ["transfer", str(photos), str(STYLE), "--out-dir", str(tmp_path), "--ray"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "pip install 'neuralart[ray]'" in error_line(result)
    assert not list(tmp_path.iterdir())


def cluster(cpus: int, gpus: int) -> Cluster:
    return Cluster(
        ray=None, address="local", started=True, seconds=0, cpus=cpus, gpus=gpus, nodes=1
    )


def test_one_worker_per_gpu_else_per_cpu():
    assert plan_workers(cluster(16, 4), "auto", None).describe() == "4 workers, one GPU each"
    plan = plan_workers(cluster(16, 4), "cpu", None)  # --device cpu leaves the GPUs alone
    assert (plan.workers, plan.cpus, plan.gpus) == (16, 1, 0)
    plan = plan_workers(cluster(8, 0), "auto", 3)  # the CPUs shared out among 3 workers
    assert (plan.workers, plan.cpus, plan.gpus) == (3, 2, 0)
    with pytest.raises(NeuralartError, match="--ray-workers 5: the cluster has 4 GPUs"):
        plan_workers(cluster(16, 4), "auto", 5)
    with pytest.raises(NeuralartError, match="no CPUs or GPUs"):
        plan_workers(cluster(0, 0), "auto", None)
