"""The package's layering holds, a new cycle would fail CI, and the public face resolves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import seglab

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=src, timeout=300)


def test_layers_hold_and_a_deliberate_cycle_fails(tmp_path):
    assert _lint(ROOT / "src").returncode == 0
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "seglab", copy / "seglab",
                    ignore=shutil.ignore_patterns("zoo", "samples", "web", "__pycache__"))
    predictor = copy / "seglab" / "infer" / "predictor.py"
    predictor.write_text(predictor.read_text() + "\nfrom seglab.deploy.verify import export\n")
    result = _lint(copy)
    assert result.returncode == 1
    assert "seglab.infer is not allowed to import seglab.deploy" in result.stdout


def test_no_module_over_400_lines_and_no_grab_bag():
    sizes = {p.relative_to(ROOT / "src"): len(p.read_text().splitlines())
             for p in (ROOT / "src" / "seglab").rglob("*.py")}
    assert max(sizes.values()) <= 400, max(sizes, key=sizes.get)
    assert not [p for p in sizes if p.stem in {"utils", "helpers", "misc", "common"}]


def test_public_names_resolve_to_the_documented_objects():
    from seglab.cutout.remove import remove
    from seglab.deploy.verify import export
    from seglab.training.run import fit

    for name in seglab.__all__:
        assert getattr(seglab, name) is not None, name
    assert seglab.remove is remove and seglab.fit is fit and seglab.export is export
    assert "jewellery-cutout" in seglab.list_models()


def test_batch_report_and_export_functions_return_typed_results():
    import inspect
    import json

    from seglab.cutout.batch import CutoutSummary, GateReport, cutout_files, gate_report
    from seglab.defects.batch import PredictSummary, predict_files
    from seglab.deploy.verify import ExportRecord, export

    for fn, kind in [(predict_files, PredictSummary), (cutout_files, CutoutSummary),
                     (gate_report, GateReport), (export, ExportRecord)]:
        assert inspect.signature(fn).return_annotation in (kind, kind.__name__), fn.__name__
    summary = CutoutSummary(model="m", images=3, accepted=1, errors=[{"image": "x.jpg",
                            "error": "not an image"}], gate={"min_confidence": 0.98})
    assert summary.accepted == summary["accepted"] == 1 and summary.get("nope") is None
    assert json.loads(summary.to_json()) == summary.as_dict()
    assert summary.as_dict()["results"] == "results.jsonl"
