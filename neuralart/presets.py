"""Find and load YAML presets, follow ``extends:``, and merge defaults < presets < flags.

A preset is a bundled name (``classic``) or a path to a YAML file. A preset holds only what
it changes: ``extends: NAME_OR_FILE`` names the preset it starts from (a relative path is
read from the extending file's folder); nested mappings merge key by key, lists and
scalars replace. A preset without ``extends`` starts from ``classic``, except ``classic``
itself, which starts from the built-in defaults of ``neuralart.config``. ``name``,
``paper_row`` and ``description`` belong to one file and are never inherited.
No torch import here.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from neuralart.config import Config, build, config_from_dict, renamed_keys
from neuralart.errors import NeuralartError
from neuralart.stats import check_style

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
# Keys that describe one file rather than the method: a child never inherits them.
OWN_KEYS = ("name", "paper_row", "description")
_PACKAGE = "neuralart.bundled_presets"


@dataclass(frozen=True)
class PresetInfo:
    name: str
    paper_row: str
    description: str
    experimental: bool
    path: str
    extends: str | None = None


@dataclass(frozen=True)
class PresetFile:
    """One file of a chain of presets, as read.

    ``data``: its own keys (``extends`` removed, renamed keys under their new names, and a
    ``name`` of the file's own if it gives none); ``where``: ``bundled:NAME`` or the file's
    path (what provenance records); ``label``: how messages name it; ``parent``: the
    preset it starts from (``None`` for the root, ``classic``).
    """

    data: dict[str, Any]
    where: str
    label: str
    parent: str | None


def _bundled_files() -> dict[str, Traversable]:
    """name -> file, for every bundled preset (experimental/ included)."""
    root = importlib.resources.files(_PACKAGE)
    found: dict[str, Traversable] = {}
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


def _unknown(ref: str, names: list[str], context: str) -> NeuralartError:
    close = difflib.get_close_matches(ref, names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return NeuralartError(
        f"unknown preset {ref!r}{hint}{context} (see 'neuralart presets list', or give a YAML path)"
    )


def _locate(ref: str, folder: Path | None, context: str = "") -> tuple[str, Path | None]:
    """A reference -> its text and, for a file, its path (relative paths from ``folder``)."""
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if folder is not None and not path.is_absolute():
            path = Path(os.path.normpath(folder / path))
        if not path.is_file():
            raise NeuralartError(f"preset file not found: {path if folder else ref}{context}")
        try:
            return path.read_text(encoding="utf-8"), path
        except (OSError, UnicodeDecodeError) as exc:
            raise NeuralartError(f"cannot read preset file {path}: {exc}") from None
    files = _bundled_files()
    if ref not in files:
        raise _unknown(ref, list(files), context)
    return files[ref].read_text(encoding="utf-8"), None


def read_preset(ref: str) -> tuple[dict[str, Any], str]:
    """A preset file's own mapping, as written (its ``extends`` not followed), and the
    place it came from (``bundled:NAME`` or the file's path)."""
    text, path = _locate(ref, None)
    data = _parse(text, ref)
    data.setdefault("name", path.stem if path is not None else ref)
    return data, str(path) if path is not None else f"bundled:{ref}"


def preset_text(ref: str) -> str:
    """The YAML text of a preset, as written."""
    return _locate(ref, None)[0]


def _read_file(
    ref: str, folder: Path | None, bundled_parent: bool, child: str | None
) -> tuple[PresetFile, Path | None, str]:
    """One file of a chain -> (it, the folder its relative ``extends`` is read from, an
    identity to find cycles by)."""
    context = f" (extends: in {child})" if child is not None else ""
    if child is not None and bundled_parent and _looks_like_path(ref):
        raise NeuralartError(f"{child}: a bundled preset extends bundled presets by name")
    text, path = _locate(ref, folder, context)
    label = str(path) if path is not None else ref
    data = _parse(text, label)
    parent = data.pop("extends", None)
    if parent is not None and (not isinstance(parent, str) or not parent.strip()):
        raise NeuralartError(
            f"{label}: extends must be a preset name or a YAML file, got {parent!r}"
        )
    if parent is None and not (path is None and ref == DEFAULT_PRESET):
        parent = DEFAULT_PRESET  # every preset but the root starts from classic
    data.setdefault("name", path.stem if path is not None else ref)
    data = renamed_keys(data, label)
    try:
        build(Config, data)  # unknown keys and wrong types, named with their file
    except NeuralartError as exc:
        raise NeuralartError(f"{label}: {exc}") from None
    where = str(path) if path is not None else f"bundled:{ref}"
    identity = str(path.resolve()) if path is not None else f"bundled:{ref}"
    preset = PresetFile(data=data, where=where, label=label, parent=parent)
    return preset, (path.parent if path is not None else None), identity


def preset_chain(ref: str) -> list[PresetFile]:
    """The files a preset is made of, from the root (``classic``) to the preset itself."""
    chain: list[PresetFile] = []
    seen: list[str] = []
    current: str | None = ref
    folder: Path | None = None
    bundled = False
    while current is not None:
        child = chain[-1].label if chain else None
        preset, folder, identity = _read_file(current, folder, bundled, child)
        if identity in seen:
            cycle = [p.label for p in chain[seen.index(identity) :]] + [preset.label]
            raise NeuralartError(f"presets extend each other in a cycle: {' -> '.join(cycle)}")
        seen.append(identity)
        chain.append(preset)
        bundled = folder is None
        current = preset.parent
    return chain[::-1]


def list_presets() -> list[PresetInfo]:
    infos = []
    for name, entry in _bundled_files().items():
        data = _parse(entry.read_text(encoding="utf-8"), name)
        description = str(data.get("description") or "").strip()
        infos.append(
            PresetInfo(
                name=name,
                paper_row=str(data.get("paper_row", "")),
                description=description.splitlines()[0] if description else "",
                experimental="experimental" in str(entry),
                path=f"bundled:{name}",
                extends=data.get("extends"),
            )
        )
    return infos


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mapping merge: values of ``override`` win, sub-mappings merge, and an empty
    section (``style:`` with nothing under it) changes nothing."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(out.get(key), Mapping) and (value is None or isinstance(value, Mapping)):
            out[key] = merge(out[key], value or {})
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
    """Defaults < each preset of the chain, root first < overrides -> (validated Config,
    provenance of every value).

    Provenance maps each dotted key to ``default``, ``flag``, or ``preset:<where>`` with
    ``<where>`` the file that set the value (``bundled:NAME`` or a path): the preset
    itself or the ancestor it inherited the value from.
    """
    chain = preset_chain(preset or DEFAULT_PRESET)
    data: dict[str, Any] = {}
    set_by: dict[str, str] = {}
    for depth, layer in enumerate(chain, start=1):
        own = layer.data
        if depth < len(chain):  # an ancestor's name and description are not inherited
            own = {key: value for key, value in own.items() if key not in OWN_KEYS}
        data = merge(data, own)
        set_by.update(dict.fromkeys(_flatten(own), layer.where))
    overrides = dict(overrides or {})
    config = config_from_dict(merge(data, overrides))
    check_style(config.style)  # what the chosen statistic asks of its options
    from_flags = _flatten(overrides)
    provenance = {}
    for key in _flatten(config.to_dict()):
        if key in from_flags:
            provenance[key] = "flag"
        elif key in set_by:
            provenance[key] = f"preset:{set_by[key]}"
        else:
            provenance[key] = "default"
    return config, provenance
