"""Presets and configuration: validation, suggestions, precedence, provenance."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from neuralart.config import Config, config_from_dict
from neuralart.errors import NeuralartError, NeuralartWarning
from neuralart.presets import (
    OWN_KEYS,
    bundled_names,
    list_presets,
    merge,
    preset_chain,
    preset_text,
    read_preset,
    resolve,
)


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
    assert provenance["name"] == "preset:bundled:classic"


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
    assert provenance["style.shift"] == f"preset:{path}"
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
    # Lists and scalars replace; an empty section changes nothing.
    assert merge({"a": {"l": [1, 2]}, "d": 1}, {"a": {"l": [3]}, "d": [4]}) == {
        "a": {"l": [3]},
        "d": [4],
    }
    assert merge({"a": {"b": 1}}, {"a": None}) == {"a": {"b": 1}}


# ------------------------------------------------------------------------- extends


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _method(config: Config) -> Config:
    """A configuration without the keys that name one file."""
    return dataclasses.replace(config, **{key: "" for key in OWN_KEYS})


def test_a_file_that_only_extends_resolves_to_its_parent(tmp_path):
    path = _write(tmp_path / "mine.yaml", "extends: chain-blurred\n")
    config, provenance = resolve(str(path))
    bundled, bundled_provenance = resolve("chain-blurred")
    assert _method(config) == _method(bundled)
    assert config.to_dict() != bundled.to_dict()  # its own name, no borrowed description
    assert config.name == "mine" and config.paper_row == "" and config.description == ""
    assert provenance["description"] == "default"
    # Every inherited value names the same file as it does for the bundled preset.
    assert {k: v for k, v in provenance.items() if k not in OWN_KEYS} == {
        k: v for k, v in bundled_provenance.items() if k not in OWN_KEYS
    }


def test_a_file_without_extends_starts_from_classic(tmp_path):
    path = _write(tmp_path / "mine.yaml", "size: 96\n")
    config, provenance = resolve(str(path))
    classic, _ = resolve("classic")
    assert config.style.weight == classic.style.weight != Config().style.weight
    assert provenance["style.weight"] == "preset:bundled:classic"
    assert _method(config) == _method(dataclasses.replace(classic, size=96))
    assert [p.where for p in preset_chain(str(path))] == ["bundled:classic", str(path)]


def test_a_chain_of_files_merges_key_by_key_and_records_who_set_what(tmp_path):
    base = _write(
        tmp_path / "base.yaml",
        "extends: chain\nname: base\ndescription: my chain\nsize: 96\n"
        "style:\n  weight: 50\ncontent:\n  layers: [conv3_1, conv4_1]\n",
    )
    child = _write(
        tmp_path / "sub" / "child.yaml",
        "extends: ../base.yaml\nstyle:\n  blur: true\noptimizer:\n  iterations: [4, 2]\n",
    )
    config, provenance = resolve(str(child), {"seed": 3})
    assert config.name == "child" and config.description == ""  # not inherited
    assert config.size == 96 and config.seed == 3
    # Nested mappings merge key by key: the child's blur, the base's weight, the chain's
    # pairs and weighting, classic-shifted's shift; lists replace.
    assert (config.style.blur, config.style.weight, config.style.pairs) == (True, 50, "chain")
    assert config.style.weighting == "geometric" and config.style.shift == -1
    assert config.content.layers == ("conv3_1", "conv4_1")
    assert config.optimizer.iterations == (4, 2)
    assert provenance["style.blur"] == f"preset:{child}"
    assert provenance["optimizer.iterations"] == f"preset:{child}"
    assert provenance["style.weight"] == f"preset:{base}"
    assert provenance["content.layers"] == f"preset:{base}"
    assert provenance["style.pairs"] == "preset:bundled:chain"
    assert provenance["style.shift"] == "preset:bundled:classic-shifted"
    assert provenance["content.weight"] == "preset:bundled:classic"
    assert provenance["optimizer.learning_rate"] == "default"
    assert provenance["seed"] == "flag"
    assert provenance["name"] == f"preset:{child}"
    labels = [p.label for p in preset_chain(str(child))]
    assert labels == ["classic", "classic-shifted", "chain", str(base), str(child)]


def test_an_absolute_or_home_relative_parent(tmp_path):
    base = _write(tmp_path / "a" / "base.yaml", "style:\n  weight: 7\n")
    child = _write(tmp_path / "b" / "child.yaml", f"extends: {base}\n")
    assert resolve(str(child))[0].style.weight == 7


@pytest.mark.parametrize(
    ("files", "start", "cycle"),
    [
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "a.yaml",
         ["a.yaml", "b.yaml", "a.yaml"]),
        ({"self.yaml": "extends: ./self.yaml\n"}, "self.yaml", ["self.yaml", "self.yaml"]),
        ({"x.yaml": "extends: y.yaml\n", "y.yaml": "extends: z.yaml\n",
          "z.yaml": "extends: y.yaml\n"}, "x.yaml", ["y.yaml", "z.yaml", "y.yaml"]),
    ],
)  # fmt: skip
def test_a_cycle_of_extends_is_one_line_naming_it(tmp_path, files, start, cycle):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(NeuralartError, match="cycle") as info:
        resolve(str(tmp_path / start))
    message = str(info.value)
    assert "\n" not in message
    named = [Path(part).name for part in message.split(": ", 1)[1].split(" -> ")]
    assert named == cycle


def test_an_unknown_or_missing_parent_is_the_usual_error(tmp_path):
    path = _write(tmp_path / "mine.yaml", "extends: chian\n")
    with pytest.raises(
        NeuralartError, match="unknown preset 'chian'; did you mean 'chain'"
    ) as info:
        resolve(str(path))
    assert "mine.yaml" in str(info.value) and "\n" not in str(info.value)
    path.write_text("extends: nope.yaml\n")
    with pytest.raises(NeuralartError, match=r"preset file not found: .*nope\.yaml"):
        resolve(str(path))
    path.write_text("extends: [chain]\n")
    with pytest.raises(NeuralartError, match="extends must be a preset name or a YAML file"):
        resolve(str(path))


def test_a_bad_key_in_a_parent_names_that_file(tmp_path):
    _write(tmp_path / "base.yaml", "stlye:\n  weight: 3\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\nsize: 64\n")
    with pytest.raises(NeuralartError, match=r"base\.yaml: unknown key 'stlye'"):
        resolve(str(child))


def test_old_key_names_in_a_parent_merge_with_new_ones_in_a_child(tmp_path):
    base = _write(tmp_path / "base.yaml", "style:\n  scale: 0.5\n  weight: 4\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\nstyle:\n  image_scale: 2\n")
    with pytest.warns(NeuralartWarning, match=r"base\.yaml: style\.scale is now called"):
        config, provenance = resolve(str(child))
    assert config.style.image_scale == 2 and config.style.weight == 4
    assert provenance["style.image_scale"] == f"preset:{child}"
    with pytest.warns(NeuralartWarning):
        config, provenance = resolve(str(base))
    assert config.style.image_scale == 0.5
    assert provenance["style.image_scale"] == f"preset:{base}"  # set there, under its old name
    both = _write(tmp_path / "both.yaml", "style:\n  scale: 0.5\n  image_scale: 2\n")
    with pytest.raises(NeuralartError, match=r"give only style\.image_scale"):
        resolve(str(both))


def test_bundled_presets_extend_by_name_and_say_who_they_are():
    parents = {info.name: info.extends for info in list_presets()}
    assert parents["classic"] is None  # the root
    assert parents["classic-shifted"] == "classic"
    for name in ("chain-uniform", "chain-unshifted", "chain-blurred", "chain-extended"):
        assert parents[name] == "chain"
    for info in list_presets():
        if info.experimental:
            assert parents[info.name] == "classic"
        data, _ = read_preset(info.name)
        assert data["name"] == info.name, info.name  # stated in the file
        assert data["paper_row"] and data["description"], info.name
        if info.name != "classic":
            assert "extends" in data, info.name


def test_bundled_presets_hold_only_what_they_change():
    """No preset restates a value that the preset it extends already sets."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bundled presets use only current key names
        for name in bundled_names():
            chain = preset_chain(name)
            if len(chain) == 1:
                continue
            parent_config, parent_provenance = resolve(chain[-2].where.removeprefix("bundled:"))
            parent_values = _flat(parent_config.to_dict())
            own = _flat(chain[-1].data)
            for key, value in own.items():
                if key in OWN_KEYS:
                    continue
                restated = parent_provenance[key] != "default" and _same(parent_values[key], value)
                assert not restated, f"{name} restates {key}: {value!r}"


def _flat(data, prefix=""):
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


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
