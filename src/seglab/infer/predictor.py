"""Running a saved model: ``seglab.load_model(path)`` gives a ready :class:`Predictor`.

Data flows one way: read image -> resize and normalise -> model -> probabilities
at the original resolution -> post-process (thresholds, areas, classifier) -> masks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from seglab.data.images import read_image
from seglab.errors import ModelFolderError
from seglab.infer.postprocess import binarize, explain
from seglab.infer.runtimes import Backend, TorchBackend, sigmoid
from seglab.models import folder as modelfolder
from seglab.models.network import SegmentationNet


@dataclass
class Prediction:
    """What a model says about one image, at the image's own resolution."""

    probs: np.ndarray
    """``(C, H, W)`` float32 pixel probabilities."""
    class_probs: np.ndarray
    """``(C,)`` image-level probability per class (aux head, or max pixel probability)."""
    masks: np.ndarray
    """``(C, H, W)`` uint8 masks after thresholds, minimum areas and classifier gating."""
    class_names: list[str]
    decided_by: list[str] = field(default_factory=list)
    """Per class, which post-processing rule kept or dropped it (:func:`explain`)."""

    @property
    def areas(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in zip(self.class_names, self.masks, strict=True)}

    @property
    def classes_found(self) -> list[str]:
        return [n for n, m in zip(self.class_names, self.masks, strict=True) if m.any()]

    @property
    def defect_score(self) -> float:
        """Probability that the image shows any class: the highest image-level probability."""
        return float(self.class_probs.max()) if self.class_probs.size else 0.0


class Predictor:
    """A model with its pre- and post-processing, ready to run on images."""

    def __init__(self, net: SegmentationNet, config: modelfolder.ModelConfig,
                 device: str | torch.device = "cpu", backend: Backend | None = None,
                 input_size: Sequence[int] | None = None) -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.input_size = tuple(input_size or config.input_size or ()) or None
        """``(h, w)`` the network sees; ``None``: each image's own size. An exported
        backend has the fixed size it was exported at (``seglab export --size``)."""
        self.device = torch.device(device)
        self.backend: Backend = backend or TorchBackend(self.net, device=self.device)
        """Runs the network: PyTorch fp32 unless an exported, checked backend was chosen."""
        self.tta = False
        """Average over horizontal and vertical flips (slower, usually a little better)."""
        self._mean, self._std = config.normalization.on_uint8()

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """Resize to the model's input size (if it has one) and normalise to ``(3, h, w)``."""
        return preprocess(image, self.input_size, self._mean, self._std)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the backend on a preprocessed ``(N, 3, h, w)`` batch; returns probabilities."""
        views = [(), (3,), (2,)] if self.tta else [()]
        probs = cls = None
        for axes in views:
            x = np.ascontiguousarray(np.flip(batch, axes)) if axes else batch
            logits, cls_logits = self.backend(x)
            p = sigmoid(np.flip(logits, axes) if axes else logits)
            c = sigmoid(cls_logits)
            probs = p if probs is None else probs + p
            cls = c if cls is None else cls + c
        assert probs is not None and cls is not None
        return probs / len(views), cls / len(views)

    def probabilities(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pixel and image-level probabilities for each image, at its own resolution."""
        if not images:
            return []
        prepped = [self.preprocess(img) for img in images]
        shapes = {p.shape for p in prepped}
        if len(shapes) == 1:
            outs = [self.forward(np.stack(prepped))]
            probs, cls = outs[0]
            pairs = list(zip(probs, cls, strict=True))
        else:  # images of different sizes and no fixed input size: one at a time
            pairs = []
            for p in prepped:
                probs, cls = self.forward(p[None])
                pairs.append((probs[0], cls[0]))
        return [(_resize_probs(p, img.shape[:2]), c) for (p, c), img in zip(pairs, images,
                                                                            strict=True)]

    def predict(self, image: np.ndarray | str | os.PathLike[str]) -> Prediction:
        """Predict one image (array or path)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[np.ndarray | str | os.PathLike[str]]
                      ) -> list[Prediction]:
        arrays = [img if isinstance(img, np.ndarray) else read_image(img) for img in images]
        out = []
        for probs, cls in self.probabilities(arrays):
            spec = self.config.postprocess
            masks = binarize(probs, cls, spec)
            out.append(Prediction(probs, cls, masks, self.class_names,
                                  explain(probs, cls, masks, spec, self.class_names)))
        return out


def preprocess(image: np.ndarray, size: Sequence[int] | None, mean: np.ndarray,
               std: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> normalised ``(3, h, w)`` float32 at ``size`` (if given)."""
    if size is not None and image.shape[:2] != tuple(size):
        # INTER_AREA, exactly as the training transforms resize (datasets.py).
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    x = (image.astype(np.float32) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _resize_probs(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Probabilities at the image's resolution, interpolated as logits.

    Interpolating probabilities turns every edge between a sure inside (p ~ 1) and a
    sure outside (p ~ 0) into a linear ramp as wide as one model pixel is in the
    photo (5 photo pixels for a 224-pixel model on a 1100-pixel photo), so a clean,
    confident mask has a band of p = 0.5-0.9 along all its edges, and the gate's mean
    probability inside falls with the edge length (thin chains most). Interpolating
    logits, as segmentation libraries do before their softmax, keeps the same 0.5
    boundary but a transition as sharp as the model's own.
    """
    if probs.shape[1:] == tuple(shape):
        return probs
    height, width = shape
    eps = np.float32(1e-6)
    p = np.clip(probs, eps, 1 - eps)
    logits = np.log(p) - np.log1p(-p)
    # cv2 resizes up to 512 channels at once when they are last.
    resized = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return np.ascontiguousarray(sigmoid(resized).transpose(2, 0, 1))


def check_task(config: modelfolder.ModelConfig, task: str | None, name: str) -> None:
    """Refuse a model trained for the other use (a cut-out model has no defect classes; a
    defect model's masks are not a foreground to cut out)."""
    if task is not None and config.task != task:
        use = {"defects": "defect localisation (seglab predict)",
               "cutout": "background removal (seglab cutout)"}
        raise ModelFolderError(
            f"{name} is a {config.task} model, made for {use.get(config.task, config.task)}; "
            f"this needs a {task} model (`seglab models` lists the zoo's)")


def load_model(path: str | os.PathLike[str], device: str = "cpu", backend: str = "torch",
               task: str | None = None) -> Predictor:
    """Load a model folder or a zoo model (``"jewellery-cutout"``) into a :class:`Predictor`.

    ``backend`` names one of :data:`seglab.infer.runtimes.NAMES`, or ``"auto"`` for the
    fastest one that passed ``seglab export``'s agreement check. ``task`` (``"defects"``
    or ``"cutout"``) refuses a model made for the other use, with a clear error, instead
    of answering with the wrong kind of result.
    """
    from seglab.infer import runtimes
    from seglab.models import zoo

    folder = zoo.resolve(path)
    net, config = modelfolder.load_net(folder)
    check_task(config, task, str(path))
    record = runtimes.read_checks(folder)
    name = runtimes.choose(folder, backend, record, net) if device == "cpu" else backend
    name = name if name != "auto" else "torch"
    runner = runtimes.open_backend(name, net, folder, device)
    exported = record.get("input_shape") if name in runtimes.FILES else None
    return Predictor(net, config, device=device, backend=runner,
                     input_size=exported[1:] if exported else None)

