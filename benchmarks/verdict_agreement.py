"""Does a faster backend change what the cut-out gate decides on real photos it never saw?

    .venv/bin/python benchmarks/verdict_agreement.py [MODEL] [--backend openvino-bf16]
        [--data ../shared/data] [--export-count 16]

Exports MODEL (default: the zoo's ``jewellery-cutout``, copied so the zoo is untouched)
on the first ``--export-count`` real photos of ``jewellery-scenes``, as a user's
``seglab export`` does, then runs every other photo of ``jewellery-scenes`` and
``jewellery-photos`` through seglab's whole cut-out (``remove``) twice: eager PyTorch
fp32 and ``--backend``. It prints how far the gate confidence moved (median, 90th
percentile, largest), which photos changed verdict, and how many sit so close to the
0.98 threshold that any approximation could flip them. The export check compares
verdicts on its own sample photos only; this measures what it means on unseen ones.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from seglab import deploy as exporting
from seglab.cutout.remove import remove
from seglab.data.images import list_images, read_image
from seglab.infer.predictor import load_model
from seglab.models import zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="jewellery-cutout")
    parser.add_argument("--backend", default="openvino-bf16")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--export-count", type=int, default=16)
    args = parser.parse_args()
    photos = (list_images(args.data / "jewellery-scenes")
              + list_images(args.data / "jewellery-photos"))
    seen, unseen = photos[:args.export_count], photos[args.export_count:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(zoo.resolve(args.model), Path(tmp) / "model"))
        record = exporting.export(folder, samples=exporting.sample_inputs(
            folder, seen, count=len(seen)), formats=("onnx", args.backend))
        check = record["backends"][args.backend]
        if "error" in check:
            raise SystemExit(f"{args.backend}: {check['error']}")
        if not unseen:
            raise SystemExit(f"no photos left beyond the {len(seen)} exported on")
        print(f"export check on {len(seen)} photos: {args.backend} "
              f"{'passed' if check['passed'] else 'refused'}, class probability or gate "
              f"confidence moved {check['score_diff']:.5f} at most")
        eager = load_model(folder, backend="torch")
        fast = load_model(folder, backend=args.backend)
        rows = []
        for path in unseen:
            image = read_image(path)
            a, b = remove(image, eager).decision, remove(image, fast).decision
            rows.append((path.name, a, b))
    moved = np.array([abs(a.confidence - b.confidence) for _, a, b in rows])
    threshold = eager.config.gate.min_confidence if eager.config.gate else 0.98
    print(f"{len(rows)} unseen photos: gate confidence moved by {np.median(moved):.5f} "
          f"(median), {np.quantile(moved, 0.9):.5f} (90th percentile), {moved.max():.5f} "
          f"(largest)")
    flips = [(n, a.confidence, b.confidence) for n, a, b in rows if a.accepted != b.accepted]
    print(f"verdicts changed: {len(flips)}", *(f"  {n}: {x:.5f} -> {y:.5f}" for n, x, y in flips),
          sep="\n")
    near = sum(abs(a.confidence - threshold) < 0.002 for _, a, _ in rows)
    print(f"accepted: {sum(a.accepted for _, a, _ in rows)} in fp32, "
          f"{sum(b.accepted for _, _, b in rows)} with {args.backend}; {near} photos within "
          f"0.002 of the {threshold} threshold in fp32")


if __name__ == "__main__":
    main()
