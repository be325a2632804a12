"""Running a saved model: ``seglab.load_model(path)`` gives a ready :class:`Predictor`.

Data flows one way: read image -> resize and normalise -> model -> probabilities
at the original resolution -> post-process (thresholds, areas, classifier) -> masks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from seglab import modelfolder
from seglab.io import read_image
from seglab.models import SegmentationNet
from seglab.postprocess import binarize


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
                 device: str | torch.device = "cpu") -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        norm = config.normalization
        self._mean = np.asarray(norm.mean, dtype=np.float32) * 255.0
        self._std = np.asarray(norm.std, dtype=np.float32) * 255.0

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """Resize to the model's input size (if it has one) and normalise to ``(3, h, w)``."""
        if self.config.input_size is not None:
            height, width = self.config.input_size
            if image.shape[:2] != (height, width):
                shrink = height * width < image.shape[0] * image.shape[1]
                image = cv2.resize(image, (width, height),
                                   interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        x = (image.astype(np.float32) - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on a preprocessed ``(N, 3, h, w)`` batch; returns probabilities."""
        logits, cls_logits = self.net(torch.from_numpy(batch).to(self.device))
        return (torch.sigmoid(logits).float().cpu().numpy(),
                torch.sigmoid(cls_logits).float().cpu().numpy())

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
            masks = binarize(probs, cls, self.config.postprocess)
            out.append(Prediction(probs, cls, masks, self.class_names))
        return out


def _resize_probs(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if probs.shape[1:] == tuple(shape):
        return probs
    height, width = shape
    # cv2 resizes up to 512 channels at once when they are last.
    resized = cv2.resize(np.ascontiguousarray(probs.transpose(1, 2, 0)), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> Predictor:
    """Load a saved model folder into a ready :class:`Predictor`: one line, no custom objects."""
    net, config = modelfolder.load_net(Path(path))
    return Predictor(net, config, device=device)
