"""Background removal: ``remove(image)`` mirrors ``rembg.remove``: one image in (the
zoo's cut-out model by default), one :class:`Cutout` out: probability map ->
threshold -> cleaning -> gate -> what a person sees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from seglab.infer.gate import Decision, judge
from seglab.infer.predictor import Predictor


@dataclass
class Cutout:
    image: np.ndarray  # the photo (H, W, 3)
    probs: np.ndarray  # (H, W) foreground probability
    raw_mask: np.ndarray  # thresholded, (H, W) 0/1
    mask: np.ndarray  # cleaned, (H, W) 0/1
    decision: Decision

    def rgba(self, soft_edges: bool = False) -> np.ndarray:
        """The cut-out with a transparent background (soft edges follow the probabilities)."""
        if soft_edges:
            band = cv2.dilate(self.mask, np.ones((5, 5), np.uint8))
            alpha = np.clip(self.probs, 0, 1) * band
            alpha = np.maximum(alpha, self.mask.astype(np.float32))
            alpha8 = (alpha * 255 + 0.5).astype(np.uint8)
        else:  # the mask is 0/1: no float image needed
            alpha8 = self.mask.astype(np.uint8) * 255
        return np.dstack([self.image, alpha8])

    def on_colour(self, colour: tuple[int, int, int], soft_edges: bool = False) -> np.ndarray:
        rgba = self.rgba(soft_edges).astype(np.float32)
        a = rgba[..., 3:] / 255
        return (rgba[..., :3] * a + np.asarray(colour, np.float32) * (1 - a) + 0.5).astype(
            np.uint8)

    def shown(self, colour: tuple[int, int, int] | None = None, soft_edges: bool = False
              ) -> np.ndarray:
        """What a person is shown: the cut-out when accepted, else the original photo."""
        if not self.decision.accepted:
            return self.image
        return self.rgba(soft_edges) if colour is None else self.on_colour(colour, soft_edges)


_LOADED: dict[str, Predictor] = {}
"""Models ``remove`` has loaded by name, kept for the next call (like rembg's sessions)."""


def remove(image: np.ndarray | str | os.PathLike[str],
           model: Predictor | str | os.PathLike[str] | None = None) -> Cutout:
    """Cut the foreground out of one RGB image (array or file) and decide whether to show it.

    ``model`` is a loaded :class:`Predictor`, a model folder or a zoo name; the
    default is the zoo's ``jewellery-cutout``, loaded once and kept.
    """
    from seglab.data.images import read_image
    from seglab.models import zoo

    if not isinstance(image, np.ndarray):
        image = read_image(image)
    if model is None or isinstance(model, str | os.PathLike):
        key = str(model or zoo.DEFAULT_CUTOUT)
        if key not in _LOADED:
            from seglab.infer.predictor import load_model

            _LOADED[key] = load_model(key, backend="auto", task="cutout")
        model = _LOADED[key]
    else:
        from seglab.infer.predictor import check_task

        check_task(model.config, "cutout", model.config.display_name)
    return remove_batch(model, [image])[0]


def remove_batch(predictor: Predictor, images: Sequence[np.ndarray]) -> list[Cutout]:
    out = []
    for image, (probs, _) in zip(images, predictor.probabilities(list(images)), strict=True):
        out.append(Cutout(image, probs[0], *judge(probs[0], predictor.config)))
    return out


def parse_colour(text: str | None) -> tuple[int, int, int] | None:
    """'#ffffff', 'ffffff' or '255,255,255' -> (r, g, b)."""
    if not text:
        return None
    from seglab.errors import SeglabError

    value = text.strip().lstrip("#")
    try:
        if "," in value:
            parts = tuple(int(v) for v in value.split(","))
        else:
            parts = tuple(int(value[i:i + 2], 16) for i in (0, 2, 4)) if len(value) == 6 else ()
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= v <= 255 for v in parts):
        raise SeglabError(f"colour {text!r} must look like #rrggbb or r,g,b")
    return parts  # type: ignore[return-value]

