"""How much of a cut-out model's error is generalisation: the same composites drawn from
the cut-outs it trained on and from those its recipe held back.

    .venv/bin/python benchmarks/piece_gap.py MODEL [--data ../shared/data] [--count 50]

MODEL is a cut-out model folder or zoo name. Both sets are drawn exactly as the
release's held-out composites (``tools/release_zoo.py``: 512x512, studio, fabric and
wood, rooms, hands, seeds 9000-9003, what only teaches at its defaults), over the
same background photos; only the pieces differ. A model that does much better on
its own pieces learnt them rather than jewellery: more variety in the pieces (or
more pieces) is then worth more than more training on the same ones. Writes
``gap.json`` and the two sets' gate reports into ``--work``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from seglab.data.files import write_text_atomic
from seglab.infer.predictor import load_model
from seglab.recipes import load_recipe
from seglab.training.trainer import split_dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tools") not in sys.path:  # the release's yardstick, not a copy of it
    sys.path.insert(0, str(ROOT / "tools"))

from release_zoo import heldout_reports  # noqa: E402


def measure(model: str, data: Path, work: Path, count: int) -> dict:
    """Gate reports on both sides' composites under ``work``; their figures and the gap."""
    predictor = load_model(model)
    split = split_dataset(load_recipe(predictor.config.recipe), data)
    out = {}
    for side, part in (("trained on", split.train.synth), ("held back", split.val.synth)):
        reports = heldout_reports(predictor, part, work / side.replace(" ", "-"), count,
                                  label=f"composites of pieces {side}")
        rows = [row for report in reports.values() for row in report["results"]]
        ious = np.array([r["iou"] for r in rows])
        accepted = np.array([r["accepted"] for r in rows], bool)
        out[side] = {"pieces": len(part.foregrounds), "composites": len(rows),
                     "mean_iou": round(float(ious.mean()), 4),
                     "accepted": int(accepted.sum()),
                     "right_of_accepted": int((ious[accepted] >= 0.95).sum())}
        print(f"{side:10s} ({len(part.foregrounds)} pieces): mean IoU "
              f"{out[side]['mean_iou']:.4f}, accepted {out[side]['accepted']} of {len(rows)} "
              f"({out[side]['right_of_accepted']} with IoU >= 0.95)", flush=True)
    out["gap"] = round(out["trained on"]["mean_iou"] - out["held back"]["mean_iou"], 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="cut-out model folder or zoo name")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--count", type=int, default=50, help="composites per background kind")
    parser.add_argument("--work", type=Path,
                        help="reports folder (default runs/piece-gap/MODEL with / as -): "
                             "composites already there are kept, so give each model its own")
    args = parser.parse_args()
    args.work = args.work or Path("runs") / "piece-gap" / args.model.strip("/").replace("/", "-")
    started = time.time()
    result = measure(args.model, args.data, args.work, args.count)
    write_text_atomic(args.work / "gap.json", json.dumps(result, indent=2) + "\n")
    print(f"gap {result['gap']:+.4f} IoU ({time.time() - started:.0f} s); reports in {args.work}")


if __name__ == "__main__":
    main()
