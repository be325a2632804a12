"""The saved model format: a folder with ``config.json``, ``model.safetensors`` and ``README.md``.

The weights are the plain smp model's state dict, so the folder also loads
into ``smp.create_model(...)`` without seglab. A released model (the zoo) keeps
its weights in fp16 and, past 16 MB, in shards the Hugging Face way
(``model-00001-of-00002.safetensors`` plus ``model.safetensors.index.json``);
loading reads either layout and always gives an fp32 network. ``config.json`` holds everything
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
from seglab.errors import ModelFolderError, describe
from seglab.models.network import SegmentationNet, build
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
INDEX = "model.safetensors.index.json"
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
    name: str | None = None
    """The released name (a zoo model's); ``None`` for a plain training run."""

    @property
    def display_name(self) -> str:
        return self.name or self.recipe

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> ModelConfig:
        return cls(
            seglab_version=__version__,
            task=recipe.task,
            recipe=recipe.name,
            model=recipe.model,
            input_size=recipe.data.inference_size or recipe.data.input_size,
            normalization=recipe.data.normalization,
            postprocess=recipe.postprocess,
            tune=recipe.tune,
            gate=recipe.gate,
        )

    @property
    def class_names(self) -> list[str]:
        return list(self.model.classes)


def save(folder: str | os.PathLike[str], net: SegmentationNet, config: ModelConfig,
         card: str | None = None, *, half: bool = False, max_shard_mb: float | None = None,
         extra: dict[str, bytes] | None = None) -> Path:
    """Write a model folder atomically: build it beside the target, then swap it in.

    ``half`` stores floating-point weights in fp16 (half the size; a released model
    loses nothing a person can see, which ``seglab export``'s agreement check can
    confirm); ``max_shard_mb`` splits them into shards of at most that size.
    ``extra`` adds files (name -> bytes), e.g. a gate report, to the folder.
    """
    import torch
    from huggingface_hub import save_torch_state_dict

    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in net.net.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        # huggingface_hub writes one model.safetensors, or shards plus their index.
        save_torch_state_dict(
            state, staging, max_shard_size=int(max_shard_mb * 1e6) if max_shard_mb else "100GB",
            metadata={"format": "pt", "seglab": __version__,
                      "dtype": str(torch.float16 if half else torch.float32)})
        (staging / CONFIG).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(card or _minimal_card(config), encoding="utf-8")
        for name, data in (extra or {}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
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


def update(folder: str | os.PathLike[str], *, config: ModelConfig | None = None,
           card: str | None = None) -> Path:
    """Rewrite a model folder's ``config.json`` and/or card (README.md) in place, each
    atomically: what tuning and evaluation add after training. This module is the only
    one that writes model folders."""
    from seglab.data.files import write_text_atomic

    path = Path(folder)
    if config is not None:
        write_text_atomic(path / CONFIG, config.model_dump_json(indent=2) + "\n")
    if card is not None:
        write_text_atomic(path / CARD, card)
    return path


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
        raise ModelFolderError(f"{cfg_path} does not validate: {describe(exc.errors())}"
                               ) from None


def read_weights(path: Path) -> dict:
    """The state dict of a model folder, from one file or from shards named by the index.

    Read by hand (safetensors per file) rather than with huggingface_hub's
    ``load_torch_model``: that loads into the network directly, and with
    ``strict=False`` it accepts tensors of the wrong shape with only a warning
    ("All keys matched"), where a model folder that does not match its config must be
    refused with what differs (``load_net``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = [path / WEIGHTS]
    if (path / INDEX).exists():
        try:
            index = json.loads((path / INDEX).read_text(encoding="utf-8"))
            files = [path / name for name in sorted(set(index["weight_map"].values()))]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFolderError(f"{path / INDEX} is not a valid shard index: {exc}") from None
    state: dict = {}
    for weights in files:
        if not weights.exists():
            raise ModelFolderError(f"{path} has no {weights.name}: the weights file is missing")
        try:
            state.update(load_file(str(weights)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFolderError(f"{weights} is corrupted or truncated: {exc}") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_net(folder: str | os.PathLike[str]) -> tuple[SegmentationNet, ModelConfig]:
    """Rebuild the network from ``config.json`` and load its weights, checking they match."""
    path = Path(folder)
    config = read_config(path)
    state = read_weights(path)
    weights = path / (INDEX if (path / INDEX).exists() else WEIGHTS)
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


_RUN_ONLY = {".onnx", ".xml", ".bin", ".ckpt"}
"""Files a released folder leaves behind: exports are redone where the model runs."""


def pack(source: str | os.PathLike[str], target: str | os.PathLike[str], *, name: str,
         half: bool = True, max_shard_mb: float = 16.0, figures: dict[str, Any] | None = None
         ) -> Path:
    """Release a trained model folder as ``name``: fp16 weights in shards of at most
    ``max_shard_mb``, the card, its plots and reports; ``figures`` (held-out results)
    go into ``config.json`` under ``metrics.zoo`` for ``seglab models`` to list."""
    src = Path(source)
    net, config = load_net(src)
    metrics = dict(config.metrics)
    if figures is not None:
        metrics["zoo"] = figures
    from seglab.models.card import data_label

    # A released folder is read on other machines: the training data is named by its
    # last path parts, not the absolute path of the machine that trained it.
    training = {**config.training, "data": data_label(config.training.get("data"))}
    config = config.model_copy(update={"name": name, "metrics": metrics, "training": training})
    skip = {CONFIG, WEIGHTS, INDEX, "backends.json"}
    extra = {str(p.relative_to(src)): p.read_bytes() for p in sorted(src.rglob("*"))
             if p.is_file() and p.name not in skip and p.suffix not in _RUN_ONLY
             and not p.name.endswith(".safetensors")}
    card = extra.pop(CARD, b"").decode("utf-8") or None
    return save(target, net, config, card, half=half, max_shard_mb=max_shard_mb, extra=extra)


def _minimal_card(config: ModelConfig) -> str:
    return (f"# {config.recipe}\n\nseglab {config.task} model: {config.model.arch} with a "
            f"{config.model.encoder} encoder, classes {', '.join(config.model.classes)}.\n"
            "Untrained or not yet evaluated: no metrics were measured for this folder.\n")
