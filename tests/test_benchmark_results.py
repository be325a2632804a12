"""benchmarks/RESULTS.md keeps one section per kind of CPU: a run on one kind rewrites its
own section and never the rows measured on another."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run as bench_run

LEGACY = """# seglab benchmark results

Last run 2026-11-23 02:16 UTC: `python benchmarks/run.py cutout --repeats 3` (cutout).

- Machine: Intel(R) Xeon(R) Processor, 2 cores visible, torch threads 2
- Every ratio is seglab / baseline, both measured in the same run.

| bench | case | unit | baseline | seglab | ratio | notes |
|---|---|---|---:|---:|---:|---|
| rle | encode 256x1600 (vs per-pixel loop) | masks/s | 32.37 | 1686.30 | 52.09x |  |
| unet | 128x800 batch 1 onnx | img/s | 4.13 | 6.21 | 1.50x | passed |
"""


def _row(bench: str, case: str, ratio: float) -> dict:
    return {"bench": bench, "case": case, "unit": "img/s", "baseline": 1.0,
            "seglab": ratio, "ratio": ratio, "extra": ""}


def test_a_run_rewrites_only_its_own_cpu_section(tmp_path, monkeypatch):
    path = tmp_path / "RESULTS.md"
    path.write_text(LEGACY, encoding="utf-8")
    monkeypatch.setattr(bench_run, "cpu_kind", lambda: "AMD EPYC 9B14 (avx512f avx512_bf16)")
    monkeypatch.setattr(bench_run, "rows", [_row("unet", "128x800 batch 1 onnx", 2.5)])
    bench_run.write_results(path, "2026-12-04 03:00 UTC", ["unet"])

    sections, order = bench_run.read_sections(path.read_text(encoding="utf-8"))
    assert order == ["AMD EPYC 9B14 (avx512f avx512_bf16)",
                     "Intel(R) Xeon(R) Processor (features not recorded)"]
    intel = "\n".join(sections[order[1]])
    assert "| 4.13 | 6.21 | 1.50x |" in intel and "52.09x" in intel  # untouched
    amd = "\n".join(sections[order[0]])
    assert "| 1.00 | 2.50 | 2.50x |" in amd and "52.09x" not in amd and "2026-12-04" in amd

    # A second run on the AMD kind with another bench keeps its unet row, adds the rle row,
    # and still leaves the Intel section byte for byte as it was.
    monkeypatch.setattr(bench_run, "rows", [_row("rle", "encode 256x1600", 40.0)])
    bench_run.write_results(path, "2026-12-04 04:00 UTC", ["rle"])
    again, order2 = bench_run.read_sections(path.read_text(encoding="utf-8"))
    assert order2 == order and again[order[1]] == sections[order[1]]
    amd2 = "\n".join(again[order[0]])
    assert "2.50x" in amd2 and "40.00x" in amd2 and amd2.count("| bench |") == 1
