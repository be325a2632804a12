"""The model zoo: ready models shipped inside the package, chosen by name.

Like rembg's sessions or smp's ``from_pretrained``: ``seglab.load_model("jewellery-cutout")``
works on a fresh install with no training and no network. Each zoo model is an
ordinary model folder (``config.json``, fp16 safetensors shards, model card) in
this package folder; ``seglab pack`` makes one from a trained model folder.
A Hugging Face Hub repository (``hf://owner/name``) is also accepted when online.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from seglab.errors import ModelFolderError

DEFAULT_CUTOUT = "jewellery-cutout"
"""What ``seglab cutout photo.jpg`` and ``seglab.remove(image)`` use without a model."""
DEFAULT_DEFECTS = "steel-defects"
HUB_PREFIX = "hf://"


def root() -> Path:
    return Path(str(resources.files("seglab") / "models" / "zoo"))


def names() -> list[str]:
    """The zoo models shipped with this installation, sorted."""
    return sorted(p.name for p in root().iterdir() if (p / "config.json").is_file())


def is_zoo_name(name: str | os.PathLike[str]) -> bool:
    return str(name) in names()


def resolve(model: str | os.PathLike[str]) -> Path:
    """A model folder for a folder path, a zoo name or ``hf://owner/name``.

    A path that exists wins over a zoo name, so a local folder called
    ``jewellery-cutout`` is used as it is.
    """
    path = Path(model)
    if path.is_dir():
        return path
    text = str(model)
    if text in names():
        return root() / text
    if text.startswith(HUB_PREFIX):
        return _from_hub(text[len(HUB_PREFIX):])
    if path.exists():
        raise ModelFolderError(f"{path} is a file, not a model folder")
    raise ModelFolderError(
        f"model folder not found: {text} (not a folder, and not one of the zoo models: "
        f"{', '.join(names()) or 'none installed'}; `seglab models` lists them)")


def _from_hub(repo_id: str) -> Path:
    """Download (or reuse the cached copy of) a model folder from the Hugging Face Hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors",
                                                               "*.md"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelFolderError(
            f"could not fetch {HUB_PREFIX}{repo_id} from the Hugging Face Hub (offline, or no "
            f"such repository): {str(exc).splitlines()[0]}") from None


@dataclass
class ZooEntry:
    """One zoo model as ``seglab models`` lists it: what it does and how well, measured."""

    name: str
    task: str
    architecture: str
    classes: list[str]
    parameters: int
    size_mb: float
    folder: Path
    figures: dict[str, Any] = field(default_factory=dict)
    """The held-out figures stored with the model (``config.json``'s ``metrics``)."""

    @property
    def card(self) -> Path:
        return self.folder / "README.md"


def entries() -> list[ZooEntry]:
    """Every zoo model with its measured figures (read from disk; no network)."""
    from safetensors import safe_open

    from seglab.models.folder import read_config

    out = []
    for name in names():
        folder = root() / name
        config = read_config(folder)
        weights = sorted(folder.glob("*.safetensors"))
        params = 0
        for w in weights:
            with safe_open(str(w), "np") as f:
                params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
        out.append(ZooEntry(name, config.task, f"{config.model.arch}/{config.model.encoder}",
                            list(config.model.classes), params,
                            round(sum(w.stat().st_size for w in weights) / 1e6, 1), folder,
                            dict(config.metrics.get("zoo", {}))))
    return out
