"""What lowers the gate's confidence on good masks: measured, per cause.

    .venv/bin/python benchmarks/gate_confidence.py MODEL [--data ../shared/data] [--count 60]

MODEL is a cut-out model folder or zoo name, or a training checkpoint (``.ckpt``,
read with its run's recipe). On composites of the recipe's held-back cut-outs at
photo sizes (the model runs at its own input size, as in use), for the masks that
are good (IoU >= 0.95 with the truth) it reports the gate's confidence when the
probabilities are brought to the photo's size by interpolating probabilities (what
seglab did before) or logits (what it does now), and when computed at the model's
own resolution; the mean probability inside the mask on its edge band (within 2
model pixels of the boundary) and in its interior; and what share of the photos
the gate then accepts. Then whether the probabilities are calibrated: a reliability
table (how often a pixel given p is foreground) and the per-pixel log loss with the
logits divided by a temperature T (T < 1 sharpens, T > 1 softens; the 0.5 boundary,
so every mask, stays put). An under-confident model (best T < 1) would be
seglab's to fix by calibrating; an over-confident or calibrated one is not, and
what each T would do to the gate is shown for the record. Writes
``benchmarks/GATE.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from seglab.data import synth
from seglab.infer.gate import confidence, judge
from seglab.infer.predictor import Predictor, load_model
from seglab.infer.runtimes import sigmoid
from seglab.metrics import iou
from seglab.recipes import load_recipe
from seglab.training.trainer import split_dataset

ROOT = Path(__file__).resolve().parents[1]


def _predictor(model: str) -> Predictor:
    if not model.endswith(".ckpt"):
        return load_model(model)
    from seglab.models import folder as modelfolder
    from seglab.recipes import Recipe
    from seglab.training.segmenter import Segmenter

    run = Path(model).parents[1]
    recipe = Recipe.model_validate_json((run / "recipe.json").read_text())
    module = Segmenter(recipe)
    module.load_state_dict(torch.load(model, map_location="cpu", weights_only=False)
                           ["state_dict"])
    return Predictor(module.net.eval(), modelfolder.ModelConfig.from_recipe(recipe))


def _upsample_probs(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The old way: linear interpolation of probabilities."""
    return cv2.resize(p, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--size", type=int, default=800, help="photo side in pixels")
    args = parser.parse_args()
    predictor = _predictor(args.model)
    recipe = load_recipe(predictor.config.recipe)
    val = split_dataset(recipe, args.data).val.synth
    spec = val.spec.for_measuring().model_copy(update={"size": (args.size, args.size)})
    maker = synth.Synthesizer(spec, val.foregrounds, val.photos["rooms"], val.photos["hands"],
                              seed=4242)
    rows = []
    temps = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
    nll = dict.fromkeys(temps, 0.0)
    bin_n, bin_fg, pixels = np.zeros(10), np.zeros(10), 0
    h_in = predictor.input_size[0] if predictor.input_size else args.size
    band_px = max(1, round(2 * args.size / h_in))
    for i in range(args.count):
        comp = maker(i)
        x = predictor.preprocess(comp.image)[None]
        p_model = predictor.forward(x)[0][0, 0]
        shape = comp.image.shape[:2]
        p_old = _upsample_probs(p_model, shape)
        logits = np.log(np.clip(p_model, 1e-6, 1 - 1e-6)) - np.log1p(
            -np.clip(p_model, 1e-6, 1 - 1e-6))
        # What seglab does (predictor._resize_probs): the logits, clipped as there.
        z = cv2.resize(logits, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        p_new = sigmoid(z)
        _, mask_new, dec_new = judge(p_new, predictor.config)
        _, mask_old, dec_old = judge(p_old, predictor.config)
        truth = comp.mask
        small_truth = cv2.resize(truth, p_model.shape[::-1], interpolation=cv2.INTER_NEAREST)
        _, mask_model, _ = judge(p_model, predictor.config)
        edge = mask_new.astype(bool) & ~cv2.erode(mask_new, np.ones((2 * band_px + 1,) * 2,
                                                                    np.uint8)).astype(bool)
        interior = mask_new.astype(bool) & ~edge
        fg = truth.astype(bool).ravel()
        bins = np.minimum((p_new.ravel() * 10).astype(np.int64), 9)
        bin_n += np.bincount(bins, minlength=10)
        bin_fg += np.bincount(bins, weights=fg, minlength=10)
        pixels += fg.size
        conf_t = {}
        z64, fg64 = torch.from_numpy(z.astype(np.float64)), torch.from_numpy(truth.astype(float))
        for temp in temps:
            # The training loss itself (BCE on logits), summed: the log loss of p at this T.
            nll[temp] += float(binary_cross_entropy_with_logits(z64 / temp, fg64,
                                                                reduction="sum"))
            conf_t[temp] = confidence(sigmoid(z / temp).astype(np.float32), mask_new)
        rows.append({
            "iou": iou(mask_new, truth), "iou_old": iou(mask_old, truth),
            "iou_model_res": iou(mask_model, small_truth),
            "conf_old": confidence(p_old, mask_old), "conf_new": dec_new.confidence,
            "conf_model_res": confidence(p_model, mask_model),
            "accepted_old": dec_old.accepted, "accepted_new": dec_new.accepted,
            "area": dec_new.area_fraction, "edge_share": float(edge.sum() / max(1, mask_new.sum())),
            "p_edge": float(p_new[edge].mean()) if edge.any() else None,
            "p_interior": float(p_new[interior].mean()) if interior.any() else None,
            "p_out": float(p_new[~mask_new.astype(bool)].mean()),
            "background": comp.params["background"], "conf_t": conf_t,
        })
    good = [r for r in rows if r["iou"] >= 0.95]

    def mean(key: str, subset: list[dict]) -> str:
        vals = [r[key] for r in subset if r[key] is not None]
        return f"{np.mean(vals):.4f}" if vals else "n/a"

    lines = [f"# Gate confidence on good masks ({args.model})", "",
             f"`benchmarks/gate_confidence.py {args.model} --count {args.count} "
             f"--size {args.size}`",
             "", f"{len(rows)} held-out composites at {args.size}x{args.size} (model input "
             f"{h_in}); {len(good)} with IoU >= 0.95.", "",
             "| measure | all | good masks |", "|---|---|---|"]
    for key, label in [("iou", "IoU (logit upsampling)"),
                       ("iou_old", "IoU (probability upsampling)"),
                       ("conf_old", "confidence, probabilities interpolated (before)"),
                       ("conf_new", "confidence, logits interpolated (now)"),
                       ("conf_model_res", "confidence at the model's resolution"),
                       ("p_interior", "mean p inside, interior"),
                       ("p_edge", f"mean p inside, edge band ({band_px} px)"),
                       ("edge_share", "share of the mask in the edge band"),
                       ("p_out", "mean p outside")]:
        lines.append(f"| {label} | {mean(key, rows)} | {mean(key, good)} |")
    acc_old = np.mean([r["accepted_old"] for r in rows])
    acc_new = np.mean([r["accepted_new"] for r in rows])
    wrong = sorted(round(r["iou"], 3) for r in rows if r["accepted_new"] and r["iou"] < 0.95)
    lines += ["", f"Accepted at the gate: {acc_old:.1%} before, {acc_new:.1%} now; "
              f"{len(wrong)} accepted with IoU < 0.95{f' {wrong}' if wrong else ''}.", ""]
    best = min(temps, key=nll.__getitem__)
    verdict = ("over-confident: softening fits better" if best > 1 else
               "under-confident: sharpening fits better" if best < 1 else "calibrated")
    lines += ["## Calibration", "",
              "| p (photo pixels) | pixels | share foreground |", "|---|---|---|",
              *[f"| {b / 10:.1f}-{(b + 1) / 10:.1f} | {int(bin_n[b])} | "
                f"{bin_fg[b] / bin_n[b]:.3f} |" for b in range(10) if bin_n[b]], "",
              f"Log loss per pixel is lowest at T = {best} ({verdict}"
              f"{'; the edge of the grid' if best in (temps[0], temps[-1]) else ''}).",
              "", "| T | log loss per pixel | accepted | accepted with IoU >= 0.95 |",
              "|---|---|---|---|"]
    gate = predictor.config.gate
    for temp in temps:
        acc = [r for r in rows if gate.min_area_fraction <= r["area"] <= gate.max_area_fraction
               and r["conf_t"][temp] >= gate.min_confidence]
        right = f"{sum(r['iou'] >= 0.95 for r in acc) / len(acc):.1%}" if acc else "n/a"
        lines.append(f"| {temp} | {nll[temp] / pixels:.5f} | {len(acc) / len(rows):.1%} | "
                     f"{right} |")
    lines.append("")
    out = ROOT / "benchmarks" / "GATE.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
