"""Find and load YAML presets, and merge defaults < preset < command-line flags.

A preset is a bundled name (``classic``) or a path to a YAML file. No torch import here.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neuralart.config import Config, config_from_dict
from neuralart.errors import NeuralartError

DEFAULT_PRESET = "classic"
# The rows of the paper's Table 2, in its order: listings and comparisons follow it.
TABLE2_ORDER = (
    "classic",
    "classic-shifted",
    "classic-dense",
    "all-to-content",
    "chain",
    "chain-uniform",
    "chain-unshifted",
    "chain-blurred",
    "chain-extended",
    "cnn-mrf",
)
_PACKAGE = "neuralart.bundled_presets"


@dataclass(frozen=True)
class PresetInfo:
    name: str
    paper_row: str
    description: str
    experimental: bool
    path: str


def _bundled_files() -> dict[str, Any]:
    """name -> Traversable, for every bundled preset (experimental/ included)."""
    root = importlib.resources.files(_PACKAGE)
    found: dict[str, Any] = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            found[entry.name.removesuffix(".yaml")] = entry
        elif entry.is_dir() and entry.name == "experimental":
            for sub in entry.iterdir():
                if sub.name.endswith(".yaml"):
                    found[sub.name.removesuffix(".yaml")] = sub

    def order(name: str) -> tuple[int, str]:
        rank = TABLE2_ORDER.index(name) if name in TABLE2_ORDER else len(TABLE2_ORDER)
        return (rank, name)

    return {name: found[name] for name in sorted(found, key=order)}


def bundled_names() -> list[str]:
    return list(_bundled_files())


def _looks_like_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        line = f" line {mark.line + 1}:" if mark is not None else ""
        raise NeuralartError(f"malformed preset {where}:{line} {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NeuralartError(f"preset {where} must be a mapping of keys to values")
    return data


def read_preset(ref: str) -> tuple[dict[str, Any], str]:
    """A preset's raw mapping and the place it came from (bundled name or file path)."""
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise NeuralartError(f"preset file not found: {ref}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise NeuralartError(f"cannot read preset file {ref}: {exc}") from None
        data = _parse(text, ref)
        data.setdefault("name", path.stem)
        return data, str(path)
    files = _bundled_files()
    if ref not in files:
        close = difflib.get_close_matches(ref, list(files), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise NeuralartError(
            f"unknown preset {ref!r}{hint} (see 'neuralart presets list', or give a YAML path)"
        )
    data = _parse(files[ref].read_text(encoding="utf-8"), ref)
    data.setdefault("name", ref)
    return data, f"bundled:{ref}"


def preset_text(ref: str) -> str:
    """The YAML text of a preset, as written."""
    if _looks_like_path(ref):
        read_preset(ref)  # same checks and messages
        return Path(ref).expanduser().read_text(encoding="utf-8")
    read_preset(ref)
    return str(_bundled_files()[ref].read_text(encoding="utf-8"))


def list_presets() -> list[PresetInfo]:
    infos = []
    for name, entry in _bundled_files().items():
        data = _parse(entry.read_text(encoding="utf-8"), name)
        infos.append(
            PresetInfo(
                name=name,
                paper_row=str(data.get("paper_row", "")),
                description=str(data.get("description", "")).strip().splitlines()[0]
                if data.get("description")
                else "",
                experimental="experimental" in str(entry),
                path=f"bundled:{name}",
            )
        )
    return infos


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mapping merge: values of ``override`` win, sub-mappings merge."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resolve(
    preset: str | None, overrides: Mapping[str, Any] | None = None
) -> tuple[Config, dict[str, str]]:
    """Defaults < preset < overrides -> (validated Config, provenance of every value).

    Provenance maps each dotted key to ``default``, ``preset:<where>`` or ``flag``.
    """
    data, where = read_preset(preset or DEFAULT_PRESET)
    overrides = dict(overrides or {})
    config = config_from_dict(merge(data, overrides))
    from_preset = _flatten(data)
    from_flags = _flatten(overrides)
    provenance = {}
    for key in _flatten(config.to_dict()):
        if key in from_flags:
            provenance[key] = "flag"
        elif key in from_preset:
            provenance[key] = f"preset:{where}"
        else:
            provenance[key] = "default"
    return config, provenance
