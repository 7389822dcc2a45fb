"""Presets and configuration: validation, suggestions, precedence, provenance."""

from __future__ import annotations

import pytest

from neuralart.config import Config, config_from_dict
from neuralart.errors import NeuralartError
from neuralart.presets import bundled_names, merge, preset_text, read_preset, resolve


def test_bundled_classic_presets_resolve_to_the_paper_rows():
    classic, _ = resolve("classic")
    shifted, _ = resolve("classic-shifted")
    for config in (classic, shifted):
        assert config.content.layers == ("conv4_2",)
        assert config.style.layers == ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
        assert config.style.weighting == "uniform"
        assert config.network.pooling == "average" and config.network.normalize
        assert config.optimizer.history == "auto" and config.optimizer.init == "content"
        assert config.optimizer.history_for(3 * 512 * 512) == 100
    assert classic.style.shift == 0.0 and classic.paper_row == "Classic"
    assert shifted.style.shift == -1.0 and shifted.paper_row == "Classic Shifted"
    assert {"classic", "classic-shifted"} <= set(bundled_names())


def test_flags_override_preset_and_provenance_says_so():
    config, provenance = resolve("classic", {"style": {"weight": 7.5}, "size": 64})
    assert config.style.weight == 7.5 and config.size == 64
    assert provenance["style.weight"] == "flag"
    assert provenance["size"] == "flag"
    assert provenance["style.shift"] == "preset:bundled:classic"
    assert provenance["optimizer.learning_rate"] == "default"


def test_defaults_live_in_the_dataclasses():
    assert Config().size == 512
    assert config_from_dict({}).optimizer.iterations == Config().optimizer.iterations


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stlye": {}}, "unknown key 'stlye'; did you mean 'style'"),
        ({"style": {"wieght": 1}}, "unknown key 'style.wieght'; did you mean 'weight'"),
        ({"style": {"weight": "heavy"}}, "style.weight must be a number"),
        ({"size": 12.5}, "size must be an integer"),
        ({"size": 0}, "size must be a positive"),
        ({"optimizer": {"iterations": -1}}, "iterations must be 0 or more"),
        ({"style": {"weight": -1}}, "style.weight must be a finite number >= 0"),
        ({"content": {"weight": float("nan")}}, "content.weight must be a finite"),
        ({"style": {"layers": ["conv9_1"]}}, "unknown layer 'conv9_1'"),
        ({"content": {"layers": ["conv4_22"]}}, "did you mean 'conv4_2'"),
        ({"style": {"shift": True}}, "style.shift must be a number"),
        ({"network": {"pooling": "mean"}}, "network.pooling must be 'average' or 'max'"),
        ({"style": {"pairs": "chains"}}, "unknown pattern 'chains'"),
        ({"style": {"pairs": [["conv1_1"]]}}, "style.pairs must be"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"network": 3}, "network must be a mapping"),
    ],
)
def test_invalid_configuration_is_one_line_error(data, message):
    with pytest.raises(NeuralartError, match=message) as info:
        config_from_dict(data)
    assert "\n" not in str(info.value)


def test_unknown_preset_suggests_the_closest_name():
    with pytest.raises(NeuralartError, match="unknown preset 'clasic'; did you mean 'classic'"):
        read_preset("clasic")


def test_preset_from_a_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("style:\n  weight: 3\n  shift: -1\nsize: 96\n")
    config, provenance = resolve(str(path))
    assert config.name == "mine" and config.style.weight == 3 and config.style.shift == -1
    assert provenance["size"] == f"preset:{path}"
    assert preset_text(str(path)).startswith("style:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("style: [unclosed\n", r"malformed preset .*bad.yaml: line \d+"),
        ("- just\n- a list\n", "must be a mapping"),
        ("style:\n  layers: conv1_1\n", "style.layers must be a list"),
        ("sizes: 3\n", "unknown key 'sizes'; did you mean 'size'"),
    ],
)
def test_bad_preset_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(NeuralartError, match=message):
        resolve(str(path))


def test_missing_preset_file(tmp_path):
    with pytest.raises(NeuralartError, match="preset file not found"):
        resolve(str(tmp_path / "nope.yaml"))


def test_merge_is_nested():
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 5}}) == {
        "a": {"b": 5, "c": 2},
        "d": 1,
    }


@pytest.mark.parametrize(
    ("optimizer", "edge", "counts"),
    [
        ({}, 512, (500,)),  # auto: one level up to 768 px
        ({}, 768, (500,)),
        ({}, 1024, (500, 250)),  # 512, then 1024
        ({}, 2048, (500, 250, 125)),  # 512, 1024, 2048
        ({"iterations": 7, "levels": 3}, 256, (7, 4, 2)),
        ({"iterations": 0}, 2048, (0, 0, 0)),
        ({"iterations": [30, 20, 10]}, 256, (30, 20, 10)),  # a list sets the levels
        ({"iterations": [30, 20], "levels": 2}, 4000, (30, 20)),
        ({"levels": 1}, 4000, (500,)),
    ],
)
def test_schedule_levels_and_iterations(optimizer, edge, counts):
    config = config_from_dict({"optimizer": optimizer})
    assert config.optimizer.level_iterations(edge) == counts
    assert config.optimizer.level_count(edge) == len(counts)


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"iterations": [30, 20], "levels": 3}, "2 iteration counts were given for 3 levels"),
        ({"iterations": [30, -1]}, "iterations must be 0 or more"),
        ({"iterations": []}, "iterations must be 0 or more"),
        ({"levels": 0}, "levels must be auto or 1 to 8"),
        ({"levels": "many"}, "optimizer.levels must be"),
    ],
)
def test_bad_schedules_are_refused(optimizer, message):
    with pytest.raises(NeuralartError, match=message):
        config_from_dict({"optimizer": optimizer})


def test_auto_history_keeps_100_steps_until_they_would_pass_2_gib():
    opt = config_from_dict({}).optimizer
    assert opt.history_for(3 * 1024 * 768) == 100
    assert opt.history_for(3 * 1024 * 1024) == 85
    assert opt.history_for(3 * 2048 * 1536) == 28  # 2 GiB / (2 · 4 B · 9.4 M values)
    assert opt.history_for(3 * 2048 * 2048) == 21
    assert opt.history_for(3 * 16384 * 16384) == 5  # never fewer than 5
    assert config_from_dict({"optimizer": {"history": 7}}).optimizer.history_for(10**9) == 7
