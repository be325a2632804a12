"""How recipe mappings combine: a recipe built on a ``base:``, and ``--set`` overrides
(YAML mappings merged key by key before pydantic validates the result)."""

from __future__ import annotations

from pathlib import Path

import yaml

from seglab.errors import RecipeError


def with_base(data: dict, path: Path, seen: frozenset[Path]) -> dict:
    """Resolve ``base:`` (a shipped recipe's name, or a YAML file beside this one): the
    base's keys, with this recipe's merged over them (mappings key by key, anything else
    replaced). Training stages that change a size or a rate say only that, instead of
    repeating forty lines that then drift apart."""
    if "base" not in data:
        return data
    data = dict(data)
    base = data.pop("base")
    if not isinstance(base, str) or not base:
        raise RecipeError(f"recipe {path}: base must be a recipe name or a YAML file name")
    if "name" not in data:
        raise RecipeError(f"recipe {path}: a recipe with a base needs its own name")
    from seglab.recipes import shipped  # here: the package imports this module

    if base.endswith((".yaml", ".yml")):
        base_path = path.parent / base
    else:
        base_path = shipped().get(base, path.parent / f"{base}.yaml")
    if not base_path.is_file():
        raise RecipeError(f"recipe {path}: base {base!r} is neither a shipped recipe nor a "
                          f"YAML file beside it")
    if base_path.resolve() in seen:
        raise RecipeError(f"recipe {path}: base {base!r} leads back to itself")
    parent = with_base(read_mapping(base_path, "recipe"), base_path,
                       seen | {base_path.resolve()})
    return merge(parent, data)


def read_mapping(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def merge_overrides(*overrides: dict | str) -> dict:
    """One override tree from several, later ones winning: each a nested dict or a
    ``section.key=value`` string (what ``seglab train --set`` takes)."""
    out: dict = {}
    for item in overrides:
        out = merge(out, parse_override(item) if isinstance(item, str) else item)
    return out


def parse_override(text: str) -> dict:
    """Turn ``train.lr=0.001`` into ``{"train": {"lr": 0.001}}`` (value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RecipeError(f"override {text!r} must look like section.key=value")
    node: dict = {}
    cursor = node
    parts = key.split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = yaml.safe_load(value)
    return node
