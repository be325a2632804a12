"""RGBA cut-outs, the foregrounds of synthetic composites: loading them, telling an
unusable alpha channel, and the ones a recipe leaves out (``data.synth.exclude``).

Kept apart from the compositing and from the datasets so that ``seglab synth`` reads
its cut-outs without importing torch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seglab.data.images import list_images, read_image
from seglab.errors import ImageReadError, SeglabError
from seglab.recipes import SynthSpec


@dataclass
class Foreground:
    name: str
    rgba: np.ndarray


def check_alpha(rgba: np.ndarray, min_share: float) -> str | None:
    """Why an RGBA image is no usable cut-out (``None`` when it is one)."""
    alpha = rgba[..., 3]
    opaque = float((alpha > 245).mean())
    clear = float((alpha < 10).mean())
    if opaque < min_share:
        return f"only {opaque:.1%} opaque pixels: no object in the alpha channel"
    if clear < min_share:
        return f"only {clear:.1%} transparent pixels: the alpha channel has no background"
    return None


def load_foregrounds(folder: str | os.PathLike[str], spec: SynthSpec
                     ) -> tuple[list[Foreground], list[str]]:
    """Load every RGBA cut-out under ``folder``; report (not raise) the unusable ones."""
    found, skipped = [], []
    for path in list_images(folder):
        try:
            rgba = read_image(path, mode="RGBA")
        except ImageReadError as exc:
            skipped.append(str(exc))
            continue
        reason = check_alpha(rgba, spec.min_alpha_opaque)
        if reason:
            skipped.append(f"{path}: {reason}")
            continue
        ys, xs = np.nonzero(rgba[..., 3] > 10)
        rgba = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        scale = spec.max_side / max(rgba.shape[:2])
        if scale < 1:
            rgba = cv2.resize(rgba, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found.append(Foreground(Path(path).relative_to(folder).as_posix(), rgba))
    if not found:
        raise SeglabError(f"no usable RGBA cut-outs in {folder}: " + "; ".join(skipped[:3]))
    return found, skipped


def excluded(fgs: list[Foreground], exclude: list[str], folder: Path) -> set[str]:
    """The names of the loaded cut-outs that ``data.synth.exclude`` leaves out (paths
    relative to ``folder``, with ``/``). A name that matches no loaded cut-out is reported
    on stderr: a typo would otherwise let the wrong cut-out in without a word."""
    wanted = {name.replace("\\", "/") for name in exclude}
    names = {fg.name for fg in fgs}
    for name in sorted(wanted - names):
        print(f"data.synth.exclude: {name} was not loaded from {folder} (no such cut-out, "
              "or skipped above): nothing left out for it", file=sys.stderr)
    return wanted & names
