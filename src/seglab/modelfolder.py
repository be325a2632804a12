"""The saved model format: a folder with ``config.json``, ``model.safetensors`` and ``README.md``.

The weights are the plain smp model's state dict, so the folder also loads
into ``smp.create_model(...)`` without seglab. ``config.json`` holds everything
needed to run the model as it was evaluated: architecture, encoder, class
names, input size, normalisation, tuned thresholds, cleaning and gate limits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from seglab import __version__
from seglab.errors import ModelFolderError
from seglab.models import SegmentationNet, build
from seglab.recipes import (
    GateSpec,
    ModelSpec,
    Normalization,
    PostprocessSpec,
    Recipe,
    Size,
    TuneSpec,
)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"


class ModelConfig(BaseModel):
    """What ``config.json`` holds; validated on load so a damaged file says what is wrong."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    seglab_version: str
    task: str
    recipe: str
    model: ModelSpec
    input_size: Size | None
    normalization: Normalization
    postprocess: PostprocessSpec
    tune: TuneSpec = TuneSpec()
    gate: GateSpec | None = None
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> ModelConfig:
        return cls(
            seglab_version=__version__,
            task=recipe.task,
            recipe=recipe.name,
            model=recipe.model,
            input_size=recipe.data.input_size,
            normalization=recipe.data.normalization,
            postprocess=recipe.postprocess,
            tune=recipe.tune,
            gate=recipe.gate,
        )

    @property
    def class_names(self) -> list[str]:
        return list(self.model.classes)


def save(folder: str | os.PathLike[str], net: SegmentationNet, config: ModelConfig,
         card: str | None = None) -> Path:
    """Write a model folder atomically: build it beside the target, then swap it in."""
    from safetensors.torch import save_file

    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in net.net.state_dict().items()}
        save_file(state, str(staging / WEIGHTS), metadata={"format": "pt", "seglab": __version__})
        (staging / CONFIG).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(card or _minimal_card(config), encoding="utf-8")
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_config(folder: str | os.PathLike[str]) -> ModelConfig:
    path = Path(folder)
    if not path.is_dir():
        raise ModelFolderError(f"model folder not found: {path}")
    cfg_path = path / CONFIG
    if not cfg_path.exists():
        raise ModelFolderError(f"{path} is not a seglab model folder: {CONFIG} is missing")
    try:
        return ModelConfig.model_validate(json.loads(cfg_path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{cfg_path} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelFolderError(f"{cfg_path} does not validate: {problems}") from None


def load_net(folder: str | os.PathLike[str]) -> tuple[SegmentationNet, ModelConfig]:
    """Rebuild the network from ``config.json`` and load its weights, checking they match."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder)
    config = read_config(path)
    weights = path / WEIGHTS
    if not weights.exists():
        raise ModelFolderError(f"{path} has no {WEIGHTS}: the weights file is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFolderError(f"{weights} is corrupted or truncated: {exc}") from None
    net = build(config.model, pretrained=False)
    expected = net.net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing tensors (first: {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} tensors of the wrong shape (first: {k} is "
                           f"{tuple(state[k].shape)}, config expects {tuple(expected[k].shape)})")
        raise ModelFolderError(
            f"{weights} does not match {CONFIG} ({config.model.arch}/{config.model.encoder}, "
            f"{len(config.model.classes)} classes): " + "; ".join(details))
    net.net.load_state_dict(state)
    net.eval()
    return net, config


def _minimal_card(config: ModelConfig) -> str:
    return (f"# {config.recipe}\n\nseglab {config.task} model: {config.model.arch} with a "
            f"{config.model.encoder} encoder, classes {', '.join(config.model.classes)}.\n"
            "Untrained or not yet evaluated: no metrics were measured for this folder.\n")
