"""What ``--engine ray`` costs and gives on one machine, beside the local streaming path
measured in the same run on the same images:

    python benchmarks/scale.py --images 200          # steel-defects on NEU-Seg strips
    python benchmarks/scale.py --task cutout --images 73

For each engine: the whole run's wall time (Ray's start, actor start-up and model loads
included) and the steady rate (images per second between the first and the last result
row, from the rows' arrival times), each as a ratio to the local path. The local path
runs as ``seglab predict`` does by default (two decoding processes, the model on every
core); Ray with 1 worker of 2 CPUs, then 2 workers of 1 CPU each. Outputs are compared
with the local path's (:func:`compare`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


class Arrivals:
    """Times at which rows arrive in a results file (polled every 50 ms)."""

    def __init__(self, path: Path) -> None:
        self.path, self.times, self._stop = path, [], threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        seen = 0
        while not self._stop.is_set():
            n = len(self.path.read_text().splitlines()) if self.path.is_file() else 0
            self.times += [time.perf_counter()] * (n - seen)
            seen = n
            time.sleep(0.05)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join()


def measure(name: str, run, out: Path, log: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    with Arrivals(out / log) as arrivals:
        start = time.perf_counter()
        summary = run(out)
        wall = time.perf_counter() - start
    t = arrivals.times
    steady = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 and t[-1] > t[0] else float("nan")
    row = {"engine": name, "images": summary.images, "wall_s": round(wall, 2),
           "images_per_s": round(summary.images / wall, 3),
           "steady_images_per_s": round(steady, 3),
           "first_row_s": round(t[0] - start, 2) if t else None}
    print(json.dumps(row), flush=True)
    return row


def compare(local: Path, other: Path) -> dict:
    """Rows byte for byte, then what a user acts on: each image's decision (defective and
    classes found, or accepted), and the largest difference in score or confidence.

    Bitwise equality holds when each Ray worker runs the model on as many threads as the
    local path: oneDNN sums a convolution in an order that depends on the thread count,
    which can move a probability sitting at the threshold by one rounding step."""
    a = [json.loads(line) for line in local.read_text().splitlines()]
    b = [json.loads(line) for line in other.read_text().splitlines()]
    key = lambda r: (r.get("defective"), r.get("classes_found"), r.get("accepted"))  # noqa: E731
    score = lambda r: r.get("defect_score", r.get("confidence", 0.0))  # noqa: E731
    if len(a) != len(b):
        return {"same_rows_as_local": False, "same_decisions": False, "max_score_diff": None}
    pairs = list(zip(a, b, strict=True))
    return {"same_rows_as_local": local.read_text() == other.read_text(),
            "same_decisions": all(key(x) == key(y) for x, y in pairs),
            "max_score_diff": round(max((abs(score(x) - score(y)) for x, y in pairs),
                                        default=0.0), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=["defects", "cutout"], default="defects")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--record", type=Path, default=None,
                        help="Append this run's table, with date and CPU, to this Markdown "
                             "file (benchmarks/SCALE.md); earlier runs are kept.")
    args = parser.parse_args()

    import torch

    from seglab.engines import raydata
    from seglab.infer.predictor import load_model

    if args.task == "defects":
        model, log = "steel-defects", "summary.jsonl"
        sources = sorted((DATA / "neu-seg" / "images").glob("*.jpg"))[:args.images]
    else:
        model, log = "jewellery-cutout", "results.jsonl"
        from seglab.data.images import IMAGE_SUFFIXES

        sources = sorted(p for p in (DATA / "jewellery-scenes").rglob("*")
                         if p.suffix.lower() in IMAGE_SUFFIXES)[:args.images]
    tmp = Path(tempfile.mkdtemp(prefix="seglab-scale-"))
    folder = tmp / "in"
    folder.mkdir()
    for i, src in enumerate(sources):
        shutil.copy(src, folder / f"{i:04d}{src.suffix}")
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)

    def local(out: Path):
        predictor = load_model(model, backend="torch", task=args.task)
        if args.task == "defects":
            from seglab.defects.batch import predict_files

            return predict_files(predictor, [folder], out, batch_size=args.batch_size,
                                 workers=2, progress=False)
        from seglab.cutout.batch import cutout_files

        return cutout_files(predictor, [folder], out, batch_size=args.batch_size, workers=2,
                            progress=False)

    def on_ray(workers: int):
        def run(out: Path):
            fn = raydata.predict_files if args.task == "defects" else raydata.cutout_files
            return fn(model, [folder], out, batch_size=args.batch_size, backend="torch",
                      workers=workers, cpus_per_worker=cores / workers, progress=False)
        return run

    rows = [measure("local (streaming, 2 decoders)", local, tmp / "local", log)]
    for workers in (1, 2):
        rows.append(measure(f"ray, {workers} worker(s) x {cores // workers} CPU",
                            on_ray(workers), tmp / f"ray{workers}", log))
        rows[-1].update(compare(tmp / "local" / log, tmp / f"ray{workers}" / log))
    base = rows[0]
    for row in rows:
        row["wall_ratio"] = round(base["wall_s"] / row["wall_s"], 3)
        row["steady_ratio"] = round(row["steady_images_per_s"] / base["steady_images_per_s"], 3)
    report = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "cpu": _cpu_name(), "cores": cores, "task": args.task,
              "model": model, "images": len(sources), "batch_size": args.batch_size,
              "rows": rows}
    lines = [f"## {report['date']}: {args.task}, {len(sources)} images, {model}", "",
             f"{report['cpu']}, {cores} cores; `python benchmarks/scale.py --task {args.task} "
             f"--images {args.images} --batch-size {args.batch_size}`", "",
             "| engine | wall s | images/s | vs local | steady images/s | vs local | "
             "first row s | rows identical | same decisions | max score diff |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['wall_s']} | {r['images_per_s']} | "
                     f"{r['wall_ratio']}x | {r['steady_images_per_s']} | {r['steady_ratio']}x | "
                     f"{r['first_row_s']} | {r.get('same_rows_as_local', '-')} | "
                     f"{r.get('same_decisions', '-')} | {r.get('max_score_diff', '-')} |")
    print("\n" + "\n".join(lines))
    if args.record:
        head = "" if args.record.exists() else (
            "# `--engine ray` against the local streaming path, on one machine\n\n"
            "Written by `benchmarks/scale.py --record`; each run appends its own section.\n\n")
        with open(args.record, "a", encoding="utf-8") as f:
            f.write(head + "\n".join(lines) + "\n\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if all(r.get("same_decisions", True) for r in rows) else 1)


def _cpu_name() -> str:
    from seglab.infer.runtimes import cpuinfo

    return cpuinfo().get("model name") or platform.machine()


if __name__ == "__main__":
    main()
