"""`--shard`: the rule that splits a batch, the job-array variables, and the command line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import DATA, error_line
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from neuralart.cli import app
from neuralart.cli.shards import Shard, parse_shard, select, shard_of
from neuralart.errors import NeuralartError
from neuralart.images import load_image, resize_long_edge, save_image

runner = CliRunner()
names = st.lists(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1
    ).map(lambda s: s + ".jpg"),
    unique=True,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(names, st.integers(min_value=1, max_value=9), st.randoms())
def test_every_file_lands_in_exactly_one_shard_whatever_the_order(files, n, rnd):
    paths = [Path("in") / f for f in files]
    parts = [select(paths, Shard(k, n, "test")) for k in range(n)]
    assert sorted(p for part in parts for p in part) == sorted(paths)  # all, none twice
    shuffled = paths[:]
    rnd.shuffle(shuffled)
    more = shuffled + [Path("elsewhere") / f"extra-{i}.png" for i in range(5)]
    for k in range(n):  # the same files, the same shards, whatever else is found with them
        assert set(parts[k]) == set(select(more, Shard(k, n, "t"))) & set(paths)
    for p in paths:  # and wherever the folder is mounted
        assert shard_of(p, n) == shard_of(Path("/mnt/node7") / p.name, n)


def test_the_rule_spreads_files_over_the_shards():
    files = [Path(f"frame-{i:05d}.png") for i in range(3000)]
    sizes = [len(select(files, Shard(k, 3, "t"))) for k in range(3)]
    assert min(sizes) > 900  # 1000 each expected


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("1/3", {}, (0, 3)),
        ("3/3", {}, (2, 3)),
        ("auto", {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, (2, 4)),
        # --array=5-11:2 -> tasks 5, 7, 9, 11
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "9",
                "SLURM_ARRAY_TASK_MIN": "5",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            (2, 4),
        ),
        ("auto/6", {"JOB_COMPLETION_INDEX": "5"}, (5, 6)),
        ("auto/2", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0"}, (1, 2)),
    ],
)
def test_parse_shard(text, env, expected):
    shard = parse_shard(text, env)
    assert (shard.index, shard.count) == expected


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("0/3", {}, "numbered 1 to 3"),
        ("4/3", {}, "numbered 1 to 3"),
        ("2", {}, "K/N, auto or auto/N"),
        ("a/3", {}, "whole number"),
        ("1/0", {}, "at least 1"),
        ("auto", {}, "found neither SLURM_ARRAY_TASK_ID"),
        ("auto", {"JOB_COMPLETION_INDEX": "1"}, "auto/N"),
        ("auto", {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT"),
        ("auto/2", {"JOB_COMPLETION_INDEX": "2"}, "shard 3 of only 2"),
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "6",
                "SLURM_ARRAY_TASK_MIN": "5",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            "not on the array's range",
        ),
    ],
)
def test_parse_shard_refuses(text, env, message):
    with pytest.raises(NeuralartError, match=message):
        parse_shard(text, env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six tiny content images."""
    out = tmp_path_factory.mktemp("contents")
    sources = sorted(DATA.glob("*.jpg"))[:6]
    for i, src in enumerate(sources):
        save_image(resize_long_edge(load_image(src), 40), out / f"c{i}.png")
    return out


ARGS = ["--size", "32", "-n", "1", "--seed", "0", "-q"]


def test_cli_three_shards_cover_the_batch_once(folder, tmp_path, style_path):
    out = tmp_path / "out"
    summaries = []
    for k in (1, 2, 3):
        run = runner.invoke(
            app,
            ["transfer", str(folder), str(style_path), "--out-dir", str(out),
             "--shard", f"{k}/3", *ARGS],
        )  # fmt: skip
        assert run.exit_code == 0, run.output
        summaries.append(json.loads(run.stdout.splitlines()[-1]))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"c{i}_starry_night_classic.png" for i in range(6)
    )
    assert sum(s["done"] for s in summaries) == 6
    assert [s["shard"] for s in summaries] == ["1/3", "2/3", "3/3"]
    # a rerun with --skip-existing finishes nothing new and says so
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}
    again = runner.invoke(
        app,
        ["transfer", str(folder), str(style_path), "--out-dir", str(out), "--shard", "auto",
         "--skip-existing", *ARGS[:-1]],
        env=env,
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "shard 3/3 from Slurm job array" in again.stderr
    last = json.loads(again.stdout.splitlines()[-1])
    assert last["done"] == 0 and last["skipped"] == summaries[2]["total"]


def test_cli_shard_bad_input_is_one_line(folder, tmp_path, style_path, content_path):
    single = runner.invoke(
        app, ["transfer", str(content_path), str(style_path), "--shard", "1/2", *ARGS]
    )
    assert single.exit_code == 1
    assert "splits a batch" in error_line(single)
    missing = runner.invoke(
        app, ["transfer", str(folder), str(style_path), "--shard", "auto", *ARGS], env={}
    )
    assert missing.exit_code == 1
    assert "found neither" in error_line(missing)
    assert not any(tmp_path.iterdir())


def test_random_order_of_discovery_does_not_matter():
    files = [Path(f"img{i}.jpg") for i in range(50)]
    shuffled = files[:]
    random.Random(3).shuffle(shuffled)
    for k in range(4):
        assert sorted(select(files, Shard(k, 4, "t"))) == sorted(select(shuffled, Shard(k, 4, "t")))
