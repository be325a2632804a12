"""Measure a trained model on held-out data, write its zoo card and pack it into the zoo.

    .venv/bin/python tools/release_zoo.py jewellery-cutout runs/zoo/jewellery-cutout/model
    .venv/bin/python tools/release_zoo.py steel-defects runs/zoo/steel-defects/model
    .venv/bin/python tools/release_zoo.py magnetic-tile runs/zoo/magnetic-tile-3/model

(``make zoo-jewellery-cutout``, ``zoo-steel-defects``, ``zoo-magnetic-tile`` train and then
run this.)
The held-out figures, the card and the fp16 shards land in ``src/seglab/models/zoo/NAME``;
the full reports, review sheets and plots stay in ``MODEL/../release``.

jewellery-cutout: composites of the cut-outs the recipe held back (never trained on)
over studio sweeps, fabric and wood, rooms and hands, 512x512, each kind on its own;
then the gate on the real photos of ``jewellery-photos`` and ``jewellery-scenes``.
steel-defects and magnetic-tile: the recipe's seeded validation split (NEU-Seg,
magnetic-tile): pooled IoU and Dice on defective images per class, with the tuned
post-processing and with none (0.5, no minimum area, no classifier gate).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from seglab.data.files import write_text_atomic
from seglab.models import folder as modelfolder
from seglab.models import zoo
from seglab.recipes import SynthSpec, load_recipe

if TYPE_CHECKING:
    from seglab.cutout.batch import GateReport
    from seglab.data.synth import Synthesizer
    from seglab.infer.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("studio", "texture", "rooms", "hands")
HELDOUT_SEED = 9000
"""First seed of the release's held-out composites (one per kind: seed + k)."""


def sources(*folders: Path) -> list[str]:
    """``repo`` lines of every SOURCES.txt under the data folders used, deduplicated."""
    repos: dict[str, str] = {}
    for folder in folders:
        for path in sorted(folder.rglob("SOURCES.txt")):
            text = path.read_text(encoding="utf-8", errors="replace")
            repo = re.search(r"^repo:\s*(\S+)", text, re.M)
            licence = re.search(r"^licen[cs]e:\s*(.+)$", text, re.M)
            if repo:
                terms = licence.group(1).split(";")[0] if licence else "no licence file"
                repos[repo.group(1)] = terms
            else:  # a SOURCES.txt in prose (magnetic-tile): its first paragraph
                first = " ".join(re.split(r"\n\s*\n", text.strip())[0].split())
                repos[first] = (licence.group(1).split(";")[0] if licence
                                else "licence not stated in SOURCES.txt")
    return [f"{repo} ({terms})" for repo, terms in sorted(repos.items())]


def learning_curve(run: Path, out: Path, title: str) -> list[tuple[float, float]]:
    """Validation score against training minutes, from the run's TensorBoard events."""
    from matplotlib.figure import Figure
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    tag = "val_mean_dice_gated" if "val_mean_dice_gated" in tags else "val_mean_dice"
    start = min(e.wall_time for e in events.Scalars("train_loss"))
    points = [(round((e.wall_time - start) / 60, 1), round(e.value, 4))
              for e in events.Scalars(tag)]
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot()
    ax.plot([m for m, _ in points], [v for _, v in points], marker="o")
    ax.set_xlabel("training minutes")
    ax.set_ylabel(f"validation {tag.removeprefix('val_')}")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return points


def curve_table(points: list[tuple[float, float]]) -> list[str]:
    return ["## Validation quality against training minutes", "",
            "![learning curve](learning_curve.png)", "",
            "| minutes | validation score |", "|---|---|",
            *[f"| {m} | {v:.4f} |" for m, v in points], ""]


def heldout_spec(spec: SynthSpec, kind: str) -> SynthSpec:
    """The recipe's composites at 512x512 over one background ``kind`` only.

    With what only teaches at its defaults (:meth:`SynthSpec.for_measuring`: no
    reflections, tilts or second pieces, the default colour jitter), so a model taught
    with them is measured on the same composites as one taught without (every other key
    still comes from the recipe)."""
    mix = {name: 1.0 if name == kind else 0.0 for name in ("colour", "shapes", *KINDS)}
    return spec.for_measuring().model_copy(update={"size": (512, 512),
                                                   "mix": spec.mix.model_copy(update=mix)})


def heldout_reports(predictor: Predictor, part: Synthesizer, out: Path, count: int,
                    seed: int = HELDOUT_SEED, label: str = "held-out composites"
                    ) -> dict[str, GateReport]:
    """Gate reports on ``count`` composites of ``part``'s pieces per background kind, each
    drawn into ``out/KIND`` from seed + k with :func:`heldout_spec`: the release's yardstick,
    also what ``benchmarks/piece_gap.py`` draws from the training pieces."""
    from seglab.cutout.batch import gate_report
    from seglab.data import synth
    from seglab.data.datasets import CutoutDataset

    reports = {}
    for k, kind in enumerate(KINDS):
        maker = synth.Synthesizer(heldout_spec(part.spec, kind), part.foregrounds,
                                  part.photos["rooms"], part.photos["hands"], seed=seed + k)
        folder = synth.generate(maker, out / kind, count, progress=False)
        reports[kind] = gate_report(predictor, CutoutDataset(folder), folder,
                                    name=f"{label}, {kind}", progress=False)
    return reports


def release_cutout(model: Path, data: Path, work: Path, count: int,
                   seed: int = HELDOUT_SEED) -> tuple[dict, str]:
    from seglab.cutout.batch import cutout_files
    from seglab.cutout.card import cutout_card
    from seglab.infer.predictor import load_model
    from seglab.training.trainer import split_dataset

    predictor = load_model(model)
    recipe = load_recipe(predictor.config.recipe)
    val = split_dataset(recipe, data).val.synth  # held-back cut-outs only
    per_kind = heldout_reports(predictor, val, work / "heldout", count, seed)
    rows = []
    for kind, report in per_kind.items():
        rows += report["results"]
        print(f"{kind:8s} mean IoU {report['mean_iou']:.4f}, accepted "
              f"{report['accepted_share']:.1%}, precision {report['precision_of_accepted']}")
    ious = [r["iou"] for r in rows]
    accepted = [r for r in rows if r["accepted"]]
    pooled = {"data": "held-out composites (held-back cut-outs; studio, fabric/wood, rooms, "
                      "hands)",
              "images": len(rows), "mean_iou": sum(ious) / len(ious),
              "accepted_share": len(accepted) / len(rows),
              "precision_of_accepted": (sum(r["iou"] >= 0.95 for r in accepted) / len(accepted)
                                        if accepted else None),
              "iou_good": 0.95}
    real = {}
    for name in ("jewellery-photos", "jewellery-scenes"):
        summary = cutout_files(predictor, [data / name], work / name, progress=False)
        real[name] = {"images": summary["images"], "accepted": summary["accepted"]}
        print(f"{name}: {summary['accepted']} of {summary['images']} accepted")
    figures = {
        "heldout_mean_iou": round(pooled["mean_iou"], 4),
        "heldout_accepted_share": round(pooled["accepted_share"], 4),
        "heldout_precision_of_accepted": (round(pooled["precision_of_accepted"], 4)
                                          if accepted else None),
        **{f"heldout_mean_iou_{k}": round(r["mean_iou"], 4) for k, r in per_kind.items()},
        **{f"accepted_{k.replace('-', '_')}": f"{v['accepted']} of {v['images']}"
           for k, v in real.items()},
    }
    card = cutout_card(predictor.config.model_copy(update={"name": "jewellery-cutout"}),
                       pooled, "jewellery-cutout")
    card += "\n".join([
        "## Held-out evaluation by background", "",
        f"{count} composites per kind, 512x512, made only from the cut-outs the recipe held "
        "back (the model never saw these pieces), gate as above:", "",
        "| background | mean IoU | median IoU | accepted | precision of accepted (IoU >= 0.95) |",
        "|---|---|---|---|---|",
        *[f"| {k} | {r['mean_iou']:.4f} | {r['median_iou']:.4f} | {r['accepted_share']:.1%} | "
          f"{_share(r['precision_of_accepted'])} |" for k, r in per_kind.items()], "",
        "## Real photos (no masks: how often a person is shown a cut-out)", "",
        *[f"- `{k}`: {v['accepted']} of {v['images']} accepted" for k, v in real.items()], "",
        "## Training data sources", "",
        "Composites drawn on the fly from these real images (see `recipe` in config.json); "
        "trained from scratch (no ImageNet weights):", "",
        *[f"- {s}" for s in sources(data / "jewellery-cutouts", data / "backgrounds")], "",
    ])
    return figures, card


def validation_report(model: Path, data: Path) -> None:
    """The gate report on the recipe's validation composites that training writes into a
    cut-out model folder (``precision_coverage.png``, which the card shows): made here
    for a folder training did not write, such as a soup."""
    from seglab.cutout.batch import gate_report
    from seglab.infer.predictor import load_model
    from seglab.training.trainer import split_dataset

    predictor = load_model(model)
    split = split_dataset(load_recipe(predictor.config.recipe), data)
    gate_report(predictor, split.val, model, name="validation composites (held-back cut-outs)",
                progress=False)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


DEFECT_DATA = {"steel-defects": ("neu-seg", "NEU-Seg"),
               "magnetic-tile": ("magnetic-tile", "magnetic-tile")}
"""Zoo defect model -> (data folder under ``--data``, the data set's name in the card)."""


def release_defects(name: str, model: Path, data: Path, work: Path) -> tuple[dict, str]:
    from seglab.defects.card import model_card
    from seglab.defects.evaluate import collect, score
    from seglab.infer.predictor import load_model
    from seglab.recipes import PostprocessSpec
    from seglab.training.trainer import split_dataset

    predictor = load_model(model)
    config = predictor.config
    recipe = load_recipe(config.recipe)
    val = split_dataset(recipe, data).val
    col = collect(predictor, val, progress=False)
    tuned = score(col, config.postprocess)
    untuned_scores = score(col, PostprocessSpec(threshold=0.5, min_area=0,
                                                classifier_threshold=0.0))
    names = config.class_names
    untuned = {n: untuned_scores["per_class"][n]["iou"] for n in names}
    mean_untuned = sum(v or 0.0 for v in untuned.values()) / len(names)
    print(f"mean IoU tuned {tuned['mean_iou']:.4f}, untuned {mean_untuned:.4f}: "
          + ", ".join(f"{n} {tuned['per_class'][n]['iou']:.3f}" for n in names))
    print(f"Dice on defective pairs tuned {tuned['mean_dice_defective']:.4f}, untuned "
          f"{untuned_scores['mean_dice_defective']:.4f}; mean Dice {tuned['mean_dice']:.4f} "
          f"(all-empty {tuned['all_empty_mean_dice']:.4f}): "
          + ", ".join(f"{n} {tuned['per_class'][n]['dice_defective'] or 0:.3f}" for n in names))
    figures = {
        "heldout_mean_iou": round(tuned["mean_iou"], 4),
        "heldout_mean_iou_untuned": round(mean_untuned, 4),
        **{f"heldout_iou_{n}": round(tuned["per_class"][n]["iou"] or 0.0, 4) for n in names},
        "heldout_mean_dice": round(tuned["mean_dice"], 4),
        "heldout_dice_defective": round(tuned["mean_dice_defective"] or 0.0, 4),
        "heldout_dice_defective_untuned": round(untuned_scores["mean_dice_defective"] or 0.0, 4),
        "all_empty_mean_dice": round(tuned["all_empty_mean_dice"], 4),
        "defect_roc_auc": tuned["defect_vs_no_defect"]["roc_auc"],
    }
    label = DEFECT_DATA[name][1]
    card = model_card(config.model_copy(update={"name": name}), tuned, None, name)
    card += "\n".join([
        "", f"## Held-out IoU and Dice ({label} validation split)", "",
        f"On the {tuned['images']} validation images of the recipe's seeded split "
        "(never trained on). IoU is pooled over every pixel of a class; Dice is the mean "
        "over the images that have the class; the mean row averages IoU over classes and "
        "Dice over every defective image x class pair. Tuned thresholds were chosen on this "
        "split; the untuned columns use 0.5 and no minimum area or classifier gate.", "",
        "| class | images with it | IoU (tuned) | IoU (untuned) | Dice on its images (tuned) "
        "| (untuned) |", "|---|---|---|---|---|---|",
        *[f"| {n} | {tuned['per_class'][n]['images_with_class']} "
          f"| {tuned['per_class'][n]['iou'] or 0:.4f} | {untuned[n] or 0:.4f} "
          f"| {tuned['per_class'][n]['dice_defective'] or 0:.4f} "
          f"| {untuned_scores['per_class'][n]['dice_defective'] or 0:.4f} |" for n in names],
        f"| mean | {tuned['defective_images']} | {tuned['mean_iou']:.4f} | {mean_untuned:.4f} "
        f"| {tuned['mean_dice_defective'] or 0:.4f} "
        f"| {untuned_scores['mean_dice_defective'] or 0:.4f} |", "",
        f"Mean Dice over every image x class pair {tuned['mean_dice']:.4f}, against "
        f"{tuned['all_empty_mean_dice']:.4f} for an all-empty prediction.", "",
        "## Training data sources", "",
        "Trained from scratch (no ImageNet weights) on:", "",
        *[f"- {s}" for s in sources(data)], "",
    ])
    (work / "metrics.json").write_text(tuned.to_json())
    return figures, card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=["jewellery-cutout", *DEFECT_DATA])
    parser.add_argument("model", type=Path, help="trained model folder (RUN/model)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--count", type=int, default=50, help="held-out composites per kind")
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED,
                        help="first seed of the held-out composites (one per kind); another "
                             "seed with --measure-only gives a second held-out set")
    parser.add_argument("--into", type=Path, default=ROOT / "src" / "seglab" / "models" / "zoo")
    parser.add_argument("--work", type=Path, help="reports folder (default MODEL/../release)")
    parser.add_argument("--history", default="",
                        help="what earlier training stages measured, for the card (Markdown)")
    parser.add_argument("--measure-only", action="store_true",
                        help="measure and write the reports, do not pack into the zoo")
    args = parser.parse_args()
    started = time.time()
    work = args.work or args.model.parent / "release"
    work.mkdir(parents=True, exist_ok=True)
    points = []
    if (args.model.parent / "tensorboard").is_dir():
        points = learning_curve(args.model.parent, work / "learning_curve.png",
                                f"{args.name}: validation during training")
    if args.name == "jewellery-cutout":
        figures, card = release_cutout(args.model, args.data, work, args.count, args.seed)
    else:
        folder = args.data / DEFECT_DATA[args.name][0]
        figures, card = release_defects(args.name, args.model, folder, work)
    if args.history:
        card += "\n".join(["", "## Training stages", "", args.history, ""])
    if points:
        card += "\n".join(["", *curve_table(points)])
        figures["training_minutes"] = points[-1][0]
    write_text_atomic(work / "figures.json", json.dumps(figures, indent=2) + "\n")
    write_text_atomic(work / "card.md", card)
    print(json.dumps(figures, indent=2))
    if args.measure_only:
        print(f"measured {args.name} in {time.time() - started:.0f} s; reports in {work}")
        return
    if args.name == "jewellery-cutout" and not (args.model / "gate_report.json").exists():
        validation_report(args.model, args.data)  # a soup has none: training writes it
    target = modelfolder.pack(args.model, args.into / args.name, name=args.name,
                              figures=figures)
    modelfolder.update(target, card=card)
    if points:
        (target / "learning_curve.png").write_bytes((work / "learning_curve.png").read_bytes())
    print(f"released {args.name} into {target} ({time.time() - started:.0f} s); "
          f"zoo now: {', '.join(zoo.names())}")


if __name__ == "__main__":
    main()
