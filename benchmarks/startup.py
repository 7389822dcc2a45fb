"""Where the time before the first iteration goes, phase by phase, in one fresh process.

    python -m benchmarks.startup [--device auto] [--preset chain-blurred] [--size 512]
                                 [--append FILE]

Times, in the order a `neuralart transfer` run meets them: importing torch, importing
the command line, starting the device (on CUDA: the context), reading the pictures,
reading and normalising the weights, moving the network to the device, building the
targets, the first evaluation (on CUDA with cuDNN's algorithm search), a second one
(the steady cost), and on CUDA the capture of the iteration as a graph. Prints one
Markdown section (and appends it to FILE).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import platform  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONTENT = REPO / "examples" / "chelsea.jpg"
STYLE = REPO / "examples" / "starry_night.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preset", default="chain-blurred")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    phases: list[tuple[str, float]] = []
    last = [STARTED]

    def done(name: str, sync: object = None) -> None:
        if sync is not None:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        phases.append((name, now - last[0]))
        last[0] = now

    import torch

    done("import torch")
    import neuralart.cli.commands  # noqa: F401
    from neuralart.graphs import CapturedObjective
    from neuralart.presets import resolve
    from neuralart.transfer import (
        build_objective,
        load_network,
        pick_device,
        plan_levels,
        prepare_inputs,
        tune_device,
    )

    done("import the command line")
    config, _ = resolve(args.preset, {"size": args.size, "device": args.device, "seed": 0})
    device = pick_device(config.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.init()
        torch.empty(1, device=device)
    done(f"start the device ({device.type})", cuda or None)
    inputs = prepare_inputs(CONTENT, [STYLE], config, None)
    levels = plan_levels(config, inputs)
    done("read the pictures")
    network = load_network(config, torch.device("cpu"))
    done("read and normalise the weights")
    network = network.to(device)
    done("network to the device", cuda or None)
    tune_device(device)
    objective = build_objective(network, config, inputs, levels[-1], None, None)
    done("build the targets", cuda or None)
    x = objective.content_image
    assert x is not None
    objective.value_and_grad(x)
    done("first evaluation", cuda or None)
    objective.value_and_grad(x)
    done("second evaluation (steady)", cuda or None)
    if cuda:
        CapturedObjective(objective, x)
        done("capture as a CUDA graph (3 evaluations and the capture)", True)
    total = sum(seconds for _, seconds in phases)
    name = torch.cuda.get_device_name(device) if cuda else platform.machine() + " CPU"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## Start-up, phase by phase, on {name} ({when})",
        "",
        f"`python -m benchmarks.startup --device {args.device} --preset {args.preset} "
        f"--size {args.size}`; torch {torch.__version__}; chelsea.jpg × starry_night.jpg, "
        f"{levels[-1].size[0]}×{levels[-1].size[1]} px. One process, the clock started "
        "when the script began (the interpreter's own start, about 0.03 s, not counted).",
        "",
        "| phase | seconds |",
        "|---|---|",
        *(f"| {phase} | {seconds:.3f} |" for phase, seconds in phases),
        f"| **total** | **{total:.3f}** |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append is not None:
        with args.append.open("a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
