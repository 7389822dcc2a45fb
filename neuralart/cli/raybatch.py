"""``--ray``: a batch spread over the workers of a Ray cluster.

Each worker is a Ray actor that loads the network once, keeps the style targets it builds
for the first picture, and then paints one picture after another: the driver hands a
worker its next picture when it has finished the last one, so fast and slow workers stay
busy until the list is empty. Actors rather than Ray Data: the state worth keeping (the
network on its device, the style targets) lives in the worker between pictures, a picture
is one call whose success, failure or lost worker the driver sees by itself, and the
driver knows at every moment which worker paints which picture (for the progress display
and for retrying exactly the pictures of a worker that died).

The workers write the outputs themselves (atomically, as the local batch does), so the
output folder must be one path that every worker can reach: a local folder on one
machine, a shared filesystem (NFS, Lustre, a mounted bucket) on a cluster.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from neuralart.cli.output import collected_warnings, error, warn
from neuralart.config import Config
from neuralart.errors import NeuralartError

# A picture is tried on at most this many workers when the worker painting it dies
# (killed, out of memory, its machine gone); a picture that fails for its own reason
# (an unreadable file) is not retried.
MAX_ATTEMPTS = 3

# Addresses --ray understands besides host:port and ray://host:port.
LOCAL = "local"
_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[A-Za-z0-9_.\-\[\]:]+:\d+)$")


def looks_like_address(text: str) -> bool:
    """What may follow ``--ray`` as its address: not an option, not a file or folder."""
    return bool(_ADDRESS.match(text.strip())) and not Path(text).exists()


def check_address(address: str) -> str:
    """``local`` (start a cluster on this machine), ``auto`` (the one Ray finds, as
    ``ray.init`` does), ``host:port`` or ``ray://host:port``; anything else is most
    likely an image swallowed by ``--ray`` written before the images."""
    text = address.strip()
    if not looks_like_address(text):
        raise NeuralartError(
            f"--ray {address!r} is not a cluster address (host:port, ray://host:port, auto); "
            "to start a local cluster, put --ray after the images or write --ray=local"
        )
    return text


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise NeuralartError(
            "--ray needs the optional package Ray: pip install 'neuralart[ray]'"
        ) from None
    return ray


@dataclass
class Cluster:
    """The connection to a Ray cluster and what it offers."""

    ray: Any
    address: str
    started: bool  # a local cluster started by this command (and stopped at its end)
    seconds: float  # to start or join it
    cpus: int
    gpus: int
    nodes: int

    def describe(self) -> str:
        what = f"{self.cpus} CPUs" + (f", {self.gpus} GPUs" if self.gpus else "")
        if self.started:
            return f"ray: started a local cluster ({what}) in {self.seconds:.1f} s"
        nodes = f"{self.nodes} node" + ("s" if self.nodes != 1 else "")
        return f"ray: joined {self.address} ({nodes}, {what}) in {self.seconds:.1f} s"

    def close(self) -> None:
        self.ray.shutdown()


def connect(address: str) -> Cluster:
    ray = import_ray()
    import logging

    began = time.perf_counter()
    started = address == LOCAL
    try:
        ray.init(
            address=None if started else address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        first = first_line(exc)
        where = "start a local Ray cluster" if started else f"join the Ray cluster at {address}"
        raise NeuralartError(f"could not {where}: {first}") from None
    resources = ray.cluster_resources()
    return Cluster(
        ray=ray,
        address=address,
        started=started,
        seconds=time.perf_counter() - began,
        cpus=int(resources.get("CPU", 0)),
        gpus=int(resources.get("GPU", 0)),
        nodes=len([n for n in ray.nodes() if n.get("Alive")]),
    )


@dataclass(frozen=True)
class Plan:
    """How many workers, and what each one asks the cluster for."""

    workers: int
    cpus: int  # per worker (and its torch threads on the CPU)
    gpus: int  # per worker, 0 or 1

    def describe(self) -> str:
        if self.gpus:
            return f"{self.workers} workers, one GPU each"
        each = f"{self.cpus} CPU" + ("s" if self.cpus != 1 else "")
        return f"{self.workers} worker{'s' if self.workers != 1 else ''}, {each} each"


def plan_workers(cluster: Cluster, device: str, asked: int | None) -> Plan:
    """One worker per GPU when the cluster has GPUs (unless ``--device cpu``), otherwise
    one per CPU; ``asked`` (``--ray-workers``) sets the number, and on the CPU the
    cluster's CPUs are shared out among them (each worker's torch threads)."""
    use_gpus = cluster.gpus > 0 and device != "cpu"
    capacity = cluster.gpus if use_gpus else cluster.cpus
    if capacity < 1:
        raise NeuralartError("the Ray cluster has no CPUs or GPUs free for workers")
    if asked is not None and not 1 <= asked <= capacity:
        unit = "GPUs" if use_gpus else "CPUs"
        raise NeuralartError(
            f"--ray-workers {asked}: the cluster has {capacity} {unit}; give 1 to {capacity}"
        )
    workers = asked or capacity
    if use_gpus:
        return Plan(workers=workers, cpus=1, gpus=1)
    return Plan(workers=workers, cpus=max(1, cluster.cpus // workers), gpus=0)


class Painter:
    """One worker: the network loaded once, the style targets kept between pictures."""

    def __init__(
        self,
        style: list[str],
        config: Config,
        provenance: dict[str, str],
        preset: str,
        threads: int,
        bit_depth: int,
        dpi: float | None,
    ) -> None:
        self.style = [Path(s) for s in style]
        self.config = config
        self.provenance = provenance
        self.preset = preset
        self.threads = threads
        self.bit_depth = bit_depth
        self.dpi = dpi
        self.network: Any = None
        self.style_cache: dict[Any, Any] = {}

    def start(self) -> dict[str, Any]:
        """Load the network; where this worker runs, or the one line why it cannot."""
        import torch

        from neuralart.transfer import NetworkCache, pick_device

        torch.set_num_threads(self.threads)
        try:
            self.network = NetworkCache(pick_device(self.config.device)).get(self.config)
        except NeuralartError as exc:
            return {"error": str(exc).splitlines()[0]}
        device = next(self.network.parameters()).device
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(device)}

    def paint(self, content: str, out_path: str) -> dict[str, Any]:
        """One picture, written to ``out_path``: its JSON summary and the warnings it
        gave, or the one line why it failed."""
        from neuralart.cli.running import run_and_save, summary

        with collected_warnings() as notes:
            try:
                written, result = run_and_save(
                    Path(content),
                    self.style,
                    self.config,
                    self.provenance,
                    self.preset,
                    Path(out_path),
                    quiet=True,
                    as_json=False,
                    network=self.network,
                    style_cache=self.style_cache,
                    bit_depth=self.bit_depth,
                    dpi=self.dpi,
                    echo=False,
                )
            except NeuralartError as exc:
                return {"error": str(exc).splitlines()[0]}
            except (MemoryError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and "out of memory" not in str(exc):
                    raise
                return {"error": "out of memory on this worker"}
        if result.stopped:
            notes.append(result.stopped)
        return {
            "summary": summary(written, self.config.name, result),
            "notes": list(notes),
            "seconds": result.seconds,
        }


@dataclass
class Job:
    content: Path
    out_path: Path
    attempts: int = 0


@dataclass
class Worker:
    number: int  # 1-based, for the display; a replacement gets a new number
    actor: Any
    where: str = "starting"
    job: Job | None = None


@dataclass
class Tally:
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    lost_workers: int = 0
    notes: list[str] = field(default_factory=list)


def run_ray_batch(
    contents: list[Path],
    style: list[Path],
    config: Config,
    provenance: dict[str, str],
    preset: str,
    out_dir: Path | None,
    skip_existing: bool,
    quiet: bool,
    as_json: bool,
    *,
    address: str,
    workers: int | None,
    bit_depth: int = 8,
    dpi: float | None = None,
    shard: str | None = None,
) -> None:
    """The batch on a Ray cluster; the same outputs, JSON lines, error lines and exit
    code as :func:`neuralart.cli.running.run_batch`."""
    from neuralart.cli.running import check_inputs, default_output
    from neuralart.images import check_output_path

    check_inputs(None, style)
    folder = (out_dir or Path(".")).resolve()
    jobs: deque[Job] = deque()
    tally = Tally(total=len(contents))
    for content in contents:
        out_path = folder / default_output(content, style, preset).name
        if skip_existing and out_path.exists():
            tally.skipped += 1
            if as_json:
                typer.echo(json.dumps({"output": str(out_path), "skipped": True}))
            continue
        jobs.append(Job(content.resolve(), out_path))
    if jobs:
        check_output_path(jobs[0].out_path)  # once here rather than once per picture
        cluster = connect(address)
        try:
            plan = plan_workers(cluster, config.device, workers)
            if not quiet:
                typer.echo(f"{cluster.describe()}; {plan.describe()}", err=True)
            Dispatcher(
                cluster, plan, jobs, tally, style, config, provenance, preset,
                bit_depth, dpi, quiet, as_json,
            ).run()  # fmt: skip
        finally:
            cluster.close()
    if not quiet:
        for text in dict.fromkeys(tally.notes):
            warn(text)
    if shard is not None:
        line = {"shard": shard, "done": tally.done, "skipped": tally.skipped}
        typer.echo(json.dumps({**line, "failed": tally.failed, "total": tally.total}))
    if tally.failed:
        error(f"{tally.failed} of {tally.total} content images failed")
        raise typer.Exit(1)


class Dispatcher:
    """Hands each free worker its next picture, collects results, replaces workers that
    die and puts their picture back in the queue (at most :data:`MAX_ATTEMPTS` tries)."""

    def __init__(
        self,
        cluster: Cluster,
        plan: Plan,
        jobs: deque[Job],
        tally: Tally,
        style: list[Path],
        config: Config,
        provenance: dict[str, str],
        preset: str,
        bit_depth: int,
        dpi: float | None,
        quiet: bool,
        as_json: bool,
    ) -> None:
        ray = cluster.ray
        self.ray = ray
        self.plan = plan
        self.jobs = jobs
        self.tally = tally
        self.quiet = quiet
        self.as_json = as_json
        self.remote = ray.remote(Painter).options(
            num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=0, max_task_retries=0
        )
        self.args = (
            [str(s.resolve()) for s in style],
            config,
            provenance,
            preset,
            plan.cpus,
            bit_depth,
            dpi,
        )
        self.numbers = 0
        # Replacements for dead workers, bounded so that a cluster that kills every
        # worker it is given ends the batch rather than looping.
        self.replacements_left = plan.workers * MAX_ATTEMPTS
        self.starting: dict[Any, Worker] = {}  # start() reference -> worker
        self.painting: dict[Any, Worker] = {}  # paint() reference -> worker
        self.idle: list[Worker] = []
        self.last_loss = "none started"
        self.display = BatchDisplay(tally.total, quiet or as_json)
        self.display.advance(tally.skipped)

    def spawn(self) -> None:
        self.numbers += 1
        worker = Worker(self.numbers, self.remote.remote(*self.args))
        self.starting[worker.actor.start.remote()] = worker

    def run(self) -> None:
        for _ in range(min(self.plan.workers, len(self.jobs))):
            self.spawn()
        with self.display:
            while self.jobs or self.painting:
                self.hand_out()
                if not self.starting and not self.painting:
                    self.give_up(f"no worker left to paint it (the last one: {self.last_loss})")
                    break
                pending = [*self.starting, *self.painting]
                ready, _ = self.ray.wait(pending, num_returns=1, timeout=0.5)
                for ref in ready:
                    if ref in self.starting:
                        self.started(self.starting.pop(ref), ref)
                    else:
                        self.finished(self.painting.pop(ref), ref)
                self.display.show_workers(self.painting.values())
        for worker in [*self.idle, *self.starting.values()]:
            self.ray.kill(worker.actor)

    def hand_out(self) -> None:
        while self.idle and self.jobs:
            worker, job = self.idle.pop(), self.jobs.popleft()
            job.attempts += 1
            worker.job = job
            ref = worker.actor.paint.remote(str(job.content), str(job.out_path))
            self.painting[ref] = worker
        if not self.jobs:  # nothing left to hand out: let idle workers go
            for worker in self.idle:
                self.ray.kill(worker.actor)
            self.idle.clear()

    def started(self, worker: Worker, ref: Any) -> None:
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self.lost(worker, exc)
            return
        if "error" in info:  # the same on every worker: the batch cannot run
            for other in [*self.starting.values(), *self.painting.values(), *self.idle]:
                self.ray.kill(other.actor)
            self.ray.kill(worker.actor)
            raise NeuralartError(info["error"])
        worker.where = f"{info['host']}:{info['pid']} {info['device']}"
        self.idle.append(worker)

    def finished(self, worker: Worker, ref: Any) -> None:
        job = worker.job
        assert job is not None
        worker.job = None
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # a bug: this picture fails
            self.fail(job, f"worker error: {first_line(exc.cause or exc)}")
            self.idle.append(worker)
            return
        except self.ray.exceptions.RayError as exc:  # the worker died under this picture
            self.lost(worker, exc)
            self.retry(job)
            return
        self.idle.append(worker)
        if "error" in out:
            self.fail(job, out["error"])
            return
        self.tally.done += 1
        self.tally.notes.extend(out["notes"])
        line = out["summary"]
        self.display.advance()
        if self.as_json:
            typer.echo(json.dumps(line))
        else:
            self.display.log(
                f"wrote {line['output']} ({out['seconds']:.1f} s, worker {worker.number})",
                counted=True,
            )

    def lost(self, worker: Worker, exc: Exception) -> None:
        self.tally.lost_workers += 1
        why = first_line(exc)
        self.last_loss = why
        if not self.quiet:
            self.display.log(f"worker {worker.number} ({worker.where}) was lost: {why}")
        self.ray.kill(worker.actor)
        if worker.job is not None:
            remove_partial(worker.job.out_path)
        if self.replacements_left > 0 and self.jobs:
            self.replacements_left -= 1
            self.spawn()

    def retry(self, job: Job) -> None:
        remove_partial(job.out_path)
        if job.attempts >= MAX_ATTEMPTS:
            self.fail(job, f"its worker died {job.attempts} times; not retried again")
            return
        self.tally.retried += 1
        if not self.quiet:
            self.display.log(f"{job.content.name}: retried on another worker")
        self.jobs.appendleft(job)
        if not self.starting and not self.painting and not self.idle and self.replacements_left:
            self.replacements_left -= 1
            self.spawn()

    def fail(self, job: Job, why: str) -> None:
        self.tally.failed += 1
        self.display.advance()
        self.display.error(f"{job.content}: {why}")

    def give_up(self, why: str) -> None:
        while self.jobs:
            self.fail(self.jobs.popleft(), why)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def remove_partial(out_path: Path) -> None:
    """The temporary file of a save that a dying worker left behind (the output itself
    only ever appears whole, by a rename)."""
    for stray in out_path.parent.glob(f".{out_path.name}.*.part"):
        stray.unlink(missing_ok=True)


class BatchDisplay:
    """The driver's progress: one rich bar over the pictures, a line per busy worker
    with its current picture; on a pipe or a log file, plain lines."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.completed = 0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.live: Any = None
        self.bar: Any = None
        self.task: Any = None
        self.lines: Any = None

    def __enter__(self) -> BatchDisplay:
        if self.quiet or not self.tty:
            return self
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        self.bar = Progress(
            TextColumn("[bold]pictures"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task("pictures", total=self.total, completed=self.completed)
        self.lines = Text()
        console = Console(stderr=True)
        self.live = Live(Group(self.bar, self.lines), console=console, refresh_per_second=4)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.lines.truncate(0)
            self.live.__exit__(None, None, None)
            self.live = None

    def advance(self, count: int = 1) -> None:
        self.completed += count
        if self.bar is not None:
            self.bar.update(self.task, completed=self.completed)

    def show_workers(self, workers: Any) -> None:
        if self.lines is None:
            return
        rows = sorted(workers, key=lambda w: w.number)
        text = [f"  worker {w.number}: {w.job.content.name}" for w in rows[:8] if w.job]
        if len(rows) > 8:
            text.append(f"  and {len(rows) - 8} more workers")
        self.lines.plain = "\n".join(text)

    def log(self, message: str, counted: bool = False) -> None:
        """A line above the bar (or a plain line without one); ``counted``: it tells
        of a picture done, numbered on a plain line."""
        if self.quiet:
            return
        if self.live is not None:
            self.live.console.print(message, markup=False, highlight=False)
        elif counted:
            typer.echo(f"[{self.completed}/{self.total}] {message}", err=True)
        else:
            typer.echo(message, err=True)

    def error(self, message: str) -> None:
        """An error line, above the bar while there is one (whatever ``quiet`` says)."""
        if self.live is not None:
            self.live.console.print(f"[red]error:[/red] {message}", highlight=False)
        else:
            error(message)
