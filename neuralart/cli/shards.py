"""``--shard K/N``: one of N disjoint parts of a batch, for job arrays.

A content image belongs to shard ``crc32(file name) mod N`` (the name without its folder,
as UTF-8): the same file lands in the same shard whatever the other files are, the order
in which they were found, or where the folder is mounted on each machine. Shards are
numbered 1..N on the command line.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from neuralart.errors import NeuralartError

SLURM_ID = "SLURM_ARRAY_TASK_ID"
KUBERNETES_INDEX = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    source: str  # where the numbers came from, for the one line that says so

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def shard_of(path: Path, count: int) -> int:
    """The 0-based shard of a content image among ``count``."""
    return zlib.crc32(path.name.encode("utf-8")) % count


def select(files: list[Path], shard: Shard) -> list[Path]:
    return [f for f in files if shard_of(f, shard.count) == shard.index]


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise NeuralartError(f"{what} must be a whole number, got {text!r}") from None


def _count(text: str) -> int:
    count = _integer(text, "the number of shards")
    if count < 1:
        raise NeuralartError(f"the number of shards must be at least 1, got {count}")
    return count


def parse_shard(text: str, environ: Mapping[str, str]) -> Shard:
    """``K/N`` (1 ≤ K ≤ N), ``auto`` (a Slurm job array) or ``auto/N`` (N given, as a
    Kubernetes indexed job needs)."""
    head, slash, tail = text.strip().partition("/")
    if head == "auto":
        return _from_environment(environ, _count(tail) if slash else None)
    if not slash:
        raise NeuralartError(f"--shard takes K/N, auto or auto/N, got {text!r}")
    k, n = _integer(head, "the shard"), _count(tail)
    if not 1 <= k <= n:
        raise NeuralartError(f"--shard {text}: shards are numbered 1 to {n}")
    return Shard(k - 1, n, f"--shard {text}")


def _from_environment(environ: Mapping[str, str], count: int | None) -> Shard:
    if SLURM_ID in environ:
        task = _integer(environ[SLURM_ID], SLURM_ID)
        first = _integer(environ.get("SLURM_ARRAY_TASK_MIN", "0"), "SLURM_ARRAY_TASK_MIN")
        step = _integer(environ.get("SLURM_ARRAY_TASK_STEP", "1"), "SLURM_ARRAY_TASK_STEP")
        tasks = environ.get("SLURM_ARRAY_TASK_COUNT")
        if count is None:
            if tasks is None:
                raise NeuralartError(
                    f"{SLURM_ID} is set but SLURM_ARRAY_TASK_COUNT is not: use --shard auto/N"
                )
            count = _count(tasks)
        if step < 1 or (task - first) % step:
            raise NeuralartError(
                f"{SLURM_ID}={task} is not on the array's range (first {first}, step {step}); "
                "give the shard as K/N"
            )
        index = (task - first) // step
        source = f"Slurm job array ({SLURM_ID}={task}, first {first}, step {step})"
    elif KUBERNETES_INDEX in environ:
        if count is None:
            raise NeuralartError(
                f"{KUBERNETES_INDEX} is set but a Kubernetes job does not say how many "
                "completions it has: use --shard auto/N"
            )
        index = _integer(environ[KUBERNETES_INDEX], KUBERNETES_INDEX)
        source = f"Kubernetes indexed job ({KUBERNETES_INDEX}={index})"
    else:
        raise NeuralartError(
            f"--shard auto found neither {SLURM_ID} (a Slurm job array) nor "
            f"{KUBERNETES_INDEX} (a Kubernetes indexed job); give the shard as K/N"
        )
    if not 0 <= index < count:
        raise NeuralartError(f"{source} is shard {index + 1} of only {count}")
    return Shard(index, count, source)
