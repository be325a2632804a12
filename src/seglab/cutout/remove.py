"""Background removal: ``remove(image)`` mirrors ``rembg.remove``: one image in (the
zoo's cut-out model by default), probability map -> threshold -> cleaning -> gate ->
what a person sees. Bytes in give PNG bytes out and a PIL image gives a PIL image, as
in rembg; arrays and paths give the whole :class:`Cutout`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from PIL import Image as PILImage

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


DECISION_KEY = "seglab"
"""PNG text chunk (and PIL ``info`` key) that carries the gate's decision as JSON."""


@overload
def remove(image: bytes, model: Predictor | str | os.PathLike[str] | None = None, *,
           only_mask: bool = False, bgcolor: tuple[int, int, int] | None = None,
           soft_edges: bool = False) -> bytes: ...
@overload
def remove(image: PILImage.Image, model: Predictor | str | os.PathLike[str] | None = None, *,
           only_mask: bool = False, bgcolor: tuple[int, int, int] | None = None,
           soft_edges: bool = False) -> PILImage.Image: ...
@overload
def remove(image: np.ndarray | str | os.PathLike[str],
           model: Predictor | str | os.PathLike[str] | None = None, *,
           only_mask: bool = False, bgcolor: tuple[int, int, int] | None = None,
           soft_edges: bool = False) -> Cutout: ...
def remove(image: Any, model: Predictor | str | os.PathLike[str] | None = None, *,
           only_mask: bool = False, bgcolor: tuple[int, int, int] | None = None,
           soft_edges: bool = False) -> Any:
    """Cut the foreground out of one image and decide whether a person is shown it.

    ``image`` is an RGB array or a file path (-> :class:`Cutout`: probabilities, raw
    and cleaned masks, decision, ``shown()``), encoded bytes (-> PNG bytes) or a PIL
    image (-> PIL image). For bytes and PIL the result is what a person is shown: the
    cut-out (on ``bgcolor`` if given) when the gate accepts it, else the original
    photo; ``only_mask`` gives the cleaned mask instead. The decision travels with it
    as JSON: the PNG's ``seglab`` text chunk, or the PIL image's ``info["seglab"]``.
    ``model`` is a loaded :class:`Predictor`, a model folder or a zoo name; the
    default is the zoo's ``jewellery-cutout``, loaded once and kept (rembg's sessions).
    """
    from seglab.data.images import read_image

    predictor = _predictor(model)
    if isinstance(image, np.ndarray):
        return remove_batch(predictor, [image])[0]
    if isinstance(image, str | os.PathLike):
        return remove_batch(predictor, [read_image(image)])[0]
    if isinstance(image, bytes | bytearray | memoryview):
        cut = remove_batch(predictor, [read_image(bytes(image), name="image bytes")])[0]
        return encode_shown(cut, "png", only_mask=only_mask, bgcolor=bgcolor,
                            soft_edges=soft_edges)
    from PIL import Image

    if isinstance(image, Image.Image):
        from seglab.data.images import from_pil

        cut = remove_batch(predictor, [from_pil(image)])[0]
        shown = Image.fromarray(_shown_array(cut, only_mask, bgcolor, soft_edges))
        shown.info[DECISION_KEY] = json.dumps(cut.decision.as_dict())
        return shown
    raise TypeError(f"remove() takes an RGB array, a path, bytes or a PIL image, not "
                    f"{type(image).__name__}")


def _predictor(model: Predictor | str | os.PathLike[str] | None) -> Predictor:
    from seglab.models import zoo

    if model is None or isinstance(model, str | os.PathLike):
        key = str(model or zoo.DEFAULT_CUTOUT)
        if key not in _LOADED:
            from seglab.infer.predictor import load_model

            _LOADED[key] = load_model(key, backend="auto", task="cutout")
        return _LOADED[key]
    from seglab.infer.predictor import check_task

    check_task(model.config, "cutout", model.config.display_name)
    return model


def _shown_array(cut: Cutout, only_mask: bool, bgcolor: tuple[int, int, int] | None,
                 soft_edges: bool) -> np.ndarray:
    if only_mask:
        return cut.mask.astype(np.uint8) * 255
    return cut.shown(bgcolor, soft_edges)


OUTPUT_FORMATS = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}


def encode_shown(cut: Cutout, fmt: str = "png", *, only_mask: bool = False,
                 bgcolor: tuple[int, int, int] | None = None, soft_edges: bool = False,
                 quality: int = 95) -> bytes:
    """What a person is shown (or the mask) as PNG, WebP or JPEG bytes; a PNG carries
    the decision as JSON in its ``seglab`` text chunk. JPEG has no transparency, so an
    accepted cut-out goes on ``bgcolor``, or on white when none is given."""
    from PIL import Image, PngImagePlugin

    if fmt == "jpeg" and not only_mask and bgcolor is None:
        bgcolor = (255, 255, 255)
    img = Image.fromarray(np.ascontiguousarray(_shown_array(cut, only_mask, bgcolor,
                                                            soft_edges)))
    buf = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text(DECISION_KEY, json.dumps(cut.decision.as_dict()))
        img.save(buf, format="PNG", pnginfo=info, compress_level=1)
    elif fmt in ("webp", "jpeg"):
        img.save(buf, format=fmt.upper(), quality=quality)
    else:
        raise ValueError(f"unknown output format {fmt!r}; choose png, webp or jpeg")
    return buf.getvalue()


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

