"""Where does a cut-out model lose IoU on held-out composites, and at which threshold and size?

    .venv/bin/python benchmarks/error_anatomy.py RELEASE/heldout [MODEL]
        [--thresholds 0.3 0.4 0.5 0.6 0.7] [--fill-holes 0 0.0001] [--sizes 576 640]

RELEASE/heldout is what ``tools/release_zoo.py jewellery-cutout`` writes (one folder per
background kind with ``images/``, ``masks/`` and ``alpha/``); MODEL defaults to the zoo's
``jewellery-cutout``. Each wrong pixel is put in one bin, and each bin's share of the
mean IoU loss printed (the bins add up to 1 - mean IoU):
``fat edge`` (wrong foreground within 2 px of the true outline), ``thin edge`` (missed
foreground there), ``missed part`` (missed foreground further in), ``filled opening``
(foreground in background the piece encloses: ring openings, hoops) and ``stray``
(foreground anywhere else); where the folders hold the composites' soft ``alpha/``, the
edge bins' share on pixels the piece only partly covers. Then where the gate's
confidence is lost: how far mean p inside the mask and mean p outside fall short, on the
outline's band and away from it.
Then the mean IoU, accepted share and right accepted
(IoU >= 0.95) with the model's own cleaning and gate at other thresholds, with other
hole-filling areas (``cleaning.fill_holes_area``: filled holes add background pixels,
of low probability, to the mask the gate reads), and at other input sizes (no
training): the questions a next training stage has to answer first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from seglab.data.images import list_images, read_image
from seglab.infer.gate import judge
from seglab.infer.predictor import load_model
from seglab.metrics import iou as mask_iou
from seglab.recipes import CleaningSpec

BINS = ("fat edge", "thin edge", "missed part", "filled opening", "stray")


SHORTFALLS = ("inside, edge", "inside, further in", "outside, edge", "outside, elsewhere")


def edge_band(truth: np.ndarray) -> np.ndarray:
    """Pixels within 2 px (city-block) of the true outline, on either side."""
    return ndimage.binary_dilation(truth, iterations=2) & ~ndimage.binary_erosion(
        truth, iterations=2)


PARTLY = ("fat edge, partly covered", "thin edge, partly covered")


def anatomy(pred: np.ndarray, truth: np.ndarray, alpha: np.ndarray | None = None
            ) -> dict[str, float]:
    """Each bin's wrong pixels over the union: the bins sum to 1 - IoU. With the
    composite's soft ``alpha``, also the edge bins' share on pixels the piece only partly
    covers (alpha 1-254): where the outline runs through a pixel, not beside it."""
    band = edge_band(truth)
    opening = ndimage.binary_fill_holes(truth) & ~truth
    extra, missed = pred & ~truth, truth & ~pred
    union = max(int((pred | truth).sum()), 1)
    counts = [extra & band, missed & band, missed & ~band, extra & opening & ~band,
              extra & ~band & ~opening]
    names = list(BINS)
    if alpha is not None:
        partly = (alpha > 0) & (alpha < 255)
        counts += [counts[0] & partly, counts[1] & partly]
        names += PARTLY
    return {name: float(c.sum()) / union for name, c in zip(names, counts, strict=True)}


def shortfall(probs: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Where the gate's confidence, min(mean p inside, 1 - mean p outside), falls short of
    1: ``1 - mean p inside`` split into the predicted mask's pixels on the true outline's
    band and further in, ``mean p outside`` likewise (the two pairs sum to each term's
    shortfall)."""
    band = edge_band(truth)
    n_in, n_out = max(int(pred.sum()), 1), max(int((~pred).sum()), 1)
    return dict(zip(SHORTFALLS, (
        float((1 - probs[pred & band]).sum()) / n_in, float((1 - probs[pred & ~band]).sum()) / n_in,
        float(probs[~pred & band].sum()) / n_out, float(probs[~pred & ~band].sum()) / n_out),
        strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("heldout", type=Path)
    parser.add_argument("model", nargs="?", default="jewellery-cutout")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--fill-holes", type=float, nargs="*", default=[],
                        help="other cleaning.fill_holes_area values (fractions of the image)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    args = parser.parse_args()
    predictor = load_model(args.model)
    pairs = [(image, kind / "masks" / f"{image.stem}.png")
             for kind in sorted(p for p in args.heldout.iterdir() if (p / "images").is_dir())
             for image in list_images(kind / "images")]
    truths = [cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 127 for _, mask in pairs]
    alphas = [cv2.imread(str(a), cv2.IMREAD_GRAYSCALE) if a.is_file() else None
              for a in (mask.parent.parent / "alpha" / mask.name for _, mask in pairs)]
    print(f"{len(pairs)} composites from {args.heldout}, model {args.model}")

    def probabilities() -> list[np.ndarray]:
        return [predictor.probabilities([read_image(image)])[0][0][0] for image, _ in pairs]

    def score(probs: list[np.ndarray], threshold: float, fill: float | None = None
              ) -> tuple[float, int, int, list]:
        config = predictor.config.model_copy(deep=True)
        config.postprocess.threshold = threshold
        if fill is not None:
            config.postprocess.cleaning = (config.postprocess.cleaning or CleaningSpec()
                                           ).model_copy(update={"fill_holes_area": fill})
        ious, accepted, right, bins = [], 0, 0, []
        for p, truth, alpha in zip(probs, truths, alphas, strict=True):
            _, mask, decision = judge(p, config)
            pred = mask.astype(bool)
            ious.append(iou := mask_iou(pred, truth))
            bins.append({**anatomy(pred, truth, alpha), **shortfall(p, pred, truth)})
            accepted += decision.accepted
            right += decision.accepted and iou >= 0.95
        return float(np.mean(ious)), accepted, right, bins

    probs = probabilities()
    own = float(np.ravel(predictor.config.postprocess.threshold)[0])
    iou, accepted, right, bins = score(probs, own)
    print(f"\nat threshold {own}: mean IoU {iou:.4f}; loss {1 - iou:.4f} =")
    for name in BINS:
        print(f"  {name:15s} {np.mean([b[name] for b in bins]):.4f}")
    if all(a is not None for a in alphas):
        for name in PARTLY:  # the outline's sub-pixel place, not a pixel beside it
            print(f"    of which {name}: {np.mean([b[name] for b in bins]):.4f}")
    short = {name: np.array([b[name] for b in bins]) for name in SHORTFALLS}
    inside, outside = short[SHORTFALLS[0]] + short[SHORTFALLS[1]], short[SHORTFALLS[2]] + \
        short[SHORTFALLS[3]]
    print(f"confidence: 1 - mean p inside {inside.mean():.4f} (the lower term in "
          f"{int((inside > outside).sum())} of {len(bins)}), mean p outside {outside.mean():.4f};"
          " of which")
    for name in SHORTFALLS:
        print(f"  {name:19s} {short[name].mean():.4f}")
    print("\nthreshold  mean IoU  accepted  right")
    for t in args.thresholds:
        iou, accepted, right, _ = score(probs, t)
        print(f"{t:9.2f}  {iou:8.4f}  {accepted:8d}  {right:5d}")
    if args.fill_holes:
        print("\nfill holes under  mean IoU  accepted  right")
    for fill in args.fill_holes:
        iou, accepted, right, _ = score(probs, own, fill)
        print(f"{fill:16g}  {iou:8.4f}  {accepted:8d}  {right:5d}")
    for size in args.sizes:
        predictor.input_size = (size, size)
        iou, accepted, right, _ = score(probabilities(), own)
        print(f"run at {size}x{size}: mean IoU {iou:.4f}, accepted {accepted}, right {right}")


if __name__ == "__main__":
    main()
