"""The CPU block cache (neuralart.cpucache): blocks reused, the memory budget kept, the
pictures unchanged. Each check runs in a child process, since the cache replaces torch's
CPU allocator for the whole process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from PIL import Image

from neuralart import cpucache

BUILT = cpucache._library().is_file()
needs_build = pytest.mark.skipif(
    not BUILT, reason="the CPU block cache is not built here (python -m neuralart.cpucache build)"
)


def child(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter; the JSON object its last line prints."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_switched_off_or_not_built_leaves_torchs_allocator(tmp_path):
    code = """
        import json, torch
        from neuralart import cpucache
        state = cpucache.enable()
        x = torch.empty(1 << 22)
        cpucache.release()
        print(json.dumps({"state": state, "stats": cpucache.stats()}))
    """
    off = child(code, NEURALART_CPU_CACHE="off")
    assert off["state"] == "off" and off["stats"]["misses"] == 0
    elsewhere = child(code, XDG_CACHE_HOME=str(tmp_path))  # nothing built there
    assert elsewhere["state"] == "not built" and elsewhere["stats"]["hits"] == 0


@needs_build
def test_a_freed_range_serves_the_next_request_that_fits():
    out = child(
        """
        import json, torch
        from neuralart import cpucache
        assert cpucache.enable() == "on"
        mib = 1 << 18  # floats in 1 MiB
        a = torch.ones(8 * mib)
        first = a.data_ptr()
        del a
        b = torch.empty(8 * mib - 1000)  # a little smaller: the same pages
        same = b.data_ptr() == first
        c = torch.empty(16 * mib)  # twice the size: fresh pages above b
        above = c.data_ptr() == first + (8 << 20)
        small = torch.empty(1000)  # below MIN_BLOCK: torch's own allocator
        before = cpucache.stats()
        del b, c, small
        after = cpucache.stats()
        d = torch.empty(24 * mib)  # the two freed ranges merged: one range serves it
        merged = d.data_ptr() == first
        hit = cpucache.stats()["hits"] == before["hits"] + 1
        del d
        cpucache.release()
        print(json.dumps({"same": same, "above": above, "merged": merged, "hit": hit,
                          "before": before, "after": after, "released": cpucache.stats()}))
        """
    )
    assert out["same"] and out["above"] and out["merged"] and out["hit"]
    assert out["before"]["hits"] == 1 and out["before"]["misses"] == 2
    assert out["before"]["in_use"] == (8 + 16) << 20  # whole pages; small not counted
    assert out["after"]["in_use"] == 0 and out["after"]["cached"] == (8 + 16) << 20
    assert out["released"]["cached"] == 0 and out["released"]["heap"] == 0


@needs_build
def test_the_pages_resident_stay_within_the_budget():
    out = child(
        """
        import json, torch
        from neuralart import cpucache
        assert cpucache.enable() == "on"
        mib = 1 << 18  # floats in 1 MiB
        held = [torch.ones(10 * mib) for _ in range(4)]  # 40 MiB in use at once
        del held[2], held[0]  # two holes of 10 MiB
        worst = 0
        for size in range(11, 30, 3):  # sizes no hole holds: fresh pages at the top
            t = torch.ones(size * mib)
            s = cpucache.stats()
            worst = max(worst, s["in_use"] + s["cached"])
            del t
        print(json.dumps({"worst": worst, "stats": cpucache.stats()}))
        """
    )
    most = out["stats"]["most_in_use"]
    assert most == (20 + 29) << 20  # the two blocks kept and the largest request
    assert out["worst"] <= (1 + cpucache.SLACK) * most
    assert out["stats"]["released"] > 0  # free pages went back to keep the budget
    assert out["stats"]["heap"] > out["worst"]  # the heap spans more than is resident


@needs_build
def test_a_run_gives_the_same_picture_with_and_without_the_cache(tmp_path):
    """Two levels of chain-blurred through the command, in a child process each."""
    pictures, runs = {}, {}
    for state in ("on", "off"):
        out = tmp_path / f"{state}.png"
        args = [
            "transfer", str(DATA / "china.jpg"), str(DATA / "starry_night.jpg"),
            "-p", "chain-blurred", "--size", "96", "-n", "4", "--levels", "2", "--seed", "0",
            "--device", "cpu", "-q", "-o", str(out),
        ]  # fmt: skip
        runs[state] = child(
            f"""
            import json, sys
            from neuralart import cpucache
            from neuralart.cli import main
            sys.argv = ["neuralart", *{args!r}]
            try:
                main()
            except SystemExit as exit:
                assert not exit.code, exit.code
            print(json.dumps({{"state": cpucache.state(), "stats": cpucache.stats()}}))
            """,
            NEURALART_CPU_CACHE=state,
        )
        pictures[state] = np.asarray(Image.open(out))
    assert runs["off"]["state"] == "off" and runs["on"]["state"] == "on"
    assert runs["on"]["stats"]["hits"] > 0  # the feature maps were served from the cache
    assert runs["on"]["stats"]["cached"] == 0  # released at the end of the run
    assert np.array_equal(pictures["on"], pictures["off"])


def test_the_build_command_says_in_one_line_when_it_cannot_build(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpucache, "build", fail)
    assert cpucache.main(["build"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Ninja is required" in err[0] and "runs without it" in err[0]
    assert cpucache.main(["nonsense"]) == 2


def test_the_source_ships_with_the_package():
    assert cpucache.SOURCE.is_file()
    assert Path(cpucache.SOURCE).suffix == ".cpp"
