"""Make the sample photos shipped in ``seglab/samples`` (run once; the outputs are committed).

Jewellery: MIT-licensed cut-outs (amolkantela23, ameyashrikant) that the zoo's
``jewellery-cutout`` recipe holds back for validation, i.e. pieces the shipped
model never trained on, placed on generated studio sweeps, fabric and wood at
800x800 and saved as JPEG, as a marketplace photo would be. No steel photo is shipped: no steel
set here is licensed for redistribution, so the demo reads NEU-Seg from
``../shared/data`` when it is there.

    .venv/bin/python tools/make_samples.py ../shared/data
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from seglab.data import backgrounds, synth
from seglab.data.images import read_image, write_image
from seglab.recipes import load_recipe
from seglab.training.trainer import split_dataset

OUT = Path(__file__).resolve().parents[1] / "src" / "seglab" / "samples"
AMOL = "amolkantela23__ar-based-virtual-jewelry-try-on-web-application"
# (cut-out, background, area fraction): every cut-out here is in the recipe's held-back share.
JEWELLERY = [
    (f"{AMOL}/earring2.png", ("studio", (250, 250, 250)), 0.18),
    (f"{AMOL}/necklace5.png", ("studio", (236, 226, 208)), 0.25),
    (f"{AMOL}/necklace4.png", ("texture", "velvet"), 0.3),
    (f"{AMOL}/earring5.png", ("texture", "wood"), 0.15),
    (f"{AMOL}/earring2.png", ("studio", (205, 205, 208)), 0.3),
    (f"{AMOL}/necklace4.png", ("texture", "weave"), 0.22),
]


def jewellery(data: Path) -> None:
    recipe = load_recipe("jewellery-cutout")
    held_back = {f.name for f in split_dataset(recipe, data).val.synth.foregrounds}
    spec = recipe.data.synth.model_copy(update={"rotation": 20.0, "off_frame": 0.0})
    out = OUT / "jewellery"
    for i, (name, (kind, what), area) in enumerate(JEWELLERY):
        assert name in held_back, f"{name} is a training cut-out"
        rgba = read_image(data / "jewellery-cutouts" / name, mode="RGBA")
        ys, xs = np.nonzero(rgba[..., 3] > 10)
        fg = synth.Foreground(name, rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
        rng = np.random.default_rng([2026, i])
        size = (800, 800)
        bg = (backgrounds.studio_field(rng, size, spec, base=what) if kind == "studio"
              else backgrounds.texture_field(rng, size, spec, kind=what))
        image, alpha, _ = synth.compose(rng, fg, bg, spec.model_copy(update={
            "area_fraction": (area, area)}), shadow_p=1.0 if kind == "studio" else 0.0)
        stem = f"{i + 1:02d}-{Path(name).stem}-{what if isinstance(what, str) else 'studio'}"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        (out / "images" / f"{stem}.jpg").write_bytes(buf.tobytes())
        write_image(out / "masks" / f"{stem}.png", (alpha > 127).astype(np.uint8) * 255)
        print(out / "images" / f"{stem}.jpg")


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    (OUT / "jewellery" / "images").mkdir(parents=True, exist_ok=True)
    jewellery(root)
