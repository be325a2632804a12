"""Why ``export`` refuses int8 for the ResNet50 U-Net at 256x1600: NNCF's settings, measured.

    python benchmarks/int8_sweep.py                 # ~10 min on 2 cores
    python benchmarks/int8_sweep.py --accuracy-control   # adds NNCF's fp32 fallback (~20 min)

The model is the Severstal recipe's U-Net (ResNet50, classifier head), fitted for
``--steps`` Adam steps at the scale it runs at: 256x384 crops of full-size strips,
the way full-size Severstal models are trained (the main benchmark fits at 128x800
and reuses the weights at 256x1600). Each NNCF setting quantises it with 8 strips;
agreement with OpenVINO fp32 masks is reported on those 16 export strips, on the 8
held out from calibration, and on 20 strips it never sees, beside the largest
classifier-probability change and the time per strip. Nothing is written.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from run import _fit_bright, _inputs, strips

SIZE = (256, 1600)
CROP = 384  # a multiple of the encoder's stride 32


def fit_full_scale(steps: int, config: Any) -> torch.nn.Module:
    """The benchmark's 'bright regions' target, learned on full-resolution crops."""
    import segmentation_models_pytorch as smp

    from seglab.models.network import SegmentationNet

    torch.manual_seed(0)
    net = SegmentationNet(smp.Unet("resnet50", encoder_weights=None, classes=4,
                                   aux_params={"classes": 4, "dropout": 0.0}), 32, True)
    loss = _fit_bright(net, strips(4), SIZE, config, steps=steps, crop=CROP)
    print(f"fitted: BCE {loss:.4f} after {steps} steps on {CROP}-wide crops", flush=True)
    return net


def settings(names: list[str]) -> dict[str, dict[str, Any]]:
    """NNCF ``quantize`` arguments for each setting tried."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters as Adv,
    )
    from nncf.quantization.advanced_parameters import OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as Ranges

    def keep_fp32(*parts: str) -> dict[str, Any]:
        return {"ignored_scope": nncf.IgnoredScope(
            names=[n for n in names if any(p in n for p in parts)])}

    return {
        "plain (seglab's default)": {},
        "mixed preset": {"preset": nncf.QuantizationPreset.MIXED},
        "full bias correction": {"fast_bias_correction": False},
        "ranges: mean quantile": {"advanced_parameters": Adv(
            activations_range_estimator_params=Ranges.MEAN_QUANTILE)},
        "ranges: histogram": {"advanced_parameters": Adv(
            activations_range_estimator_params=Ranges.HISTOGRAM)},
        "ranges: min/max without outliers": {"advanced_parameters": Adv(
            activations_range_estimator_params=Ranges.MEAN_NO_OUTLIERS_MINMAX)},
        "overflow fix off (VNNI)": {"advanced_parameters": Adv(overflow_fix=OverflowFix.DISABLE)},
        # 7-bit weights everywhere: no int16 saturation in the dot products of CPUs without
        # VNNI (AVX2, AVX-512 without VNNI), at some precision on every CPU.
        "overflow fix on every layer (no VNNI)": {
            "advanced_parameters": Adv(overflow_fix=OverflowFix.ENABLE)},
        "channel alignment on": {"advanced_parameters": Adv(disable_channel_alignment=False)},
        "fp32: segmentation head": keep_fp32("segmentation_head"),
        "fp32: head + last decoder block": keep_fp32("segmentation_head", "blocks.4"),
        "fp32: head + last two blocks + first conv": keep_fp32(
            "segmentation_head", "blocks.4", "blocks.3", "encoder/conv1"),
        "overflow fix off + fp32: head": {
            "advanced_parameters": Adv(overflow_fix=OverflowFix.DISABLE),
            **keep_fp32("segmentation_head")},
        "overflow fix off + fp32: head + last decoder block": {
            "advanced_parameters": Adv(overflow_fix=OverflowFix.DISABLE),
            **keep_fp32("segmentation_head", "blocks.4")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--only", default="", help="run the settings whose name contains "
                        "this (several: separated by commas)")
    parser.add_argument("--accuracy-control", action="store_true",
                        help="also run seglab's per-layer fp32 fallback aiming at 0.997")
    args = parser.parse_args()

    import nncf
    import openvino as ov

    from seglab import deploy as exporting
    from seglab.infer import runtimes
    from seglab.models import folder as modelfolder
    from seglab.recipes import load_recipe

    recipe = load_recipe("severstal-unet-r50", {"model": {"encoder_weights": None},
                                                "data": {"input_size": list(SIZE)}})
    config = modelfolder.ModelConfig.from_recipe(recipe)
    net = fit_full_scale(args.steps, config)
    export, unseen = _inputs(strips(16), SIZE, config), _inputs(strips(20, "severstal-labelled"),
                                                                 SIZE, config)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "model.onnx"
        exporting.export_onnx(copy.deepcopy(net), onnx, (3, *SIZE))

        def run(model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            outs = [compiled(x[None]) for x in export]
            far = np.concatenate([compiled(x[None])[0] for x in unseen])
            ms = 1000 * exporting.time_backend(lambda b: compiled(b), export[:1], min_seconds=3)
            return (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]),
                    far, ms)

        ref, ref_cls, ref_far, ref_ms = run(core.read_model(str(onnx)))
        print(f"| setting | export 16 | held-out 8 | unseen 20 | class prob moved | ms/strip |\n"
              f"|---|---:|---:|---:|---:|---:|\n| OpenVINO fp32 | 1 | 1 | 1 | 0 | {ref_ms:.0f} |",
              flush=True)

        def row(name: str, model: Any) -> None:
            logits, cls, far, ms = run(model)
            moved = np.abs(runtimes.sigmoid(cls) - runtimes.sigmoid(ref_cls)).max()
            print(f"| {name} | {exporting.agreement(logits >= 0, ref >= 0):.4f} | "
                  f"{exporting.agreement(logits[8:] >= 0, ref[8:] >= 0):.4f} | "
                  f"{exporting.agreement(far >= 0, ref_far >= 0):.4f} | {moved:.3f} | {ms:.0f} |",
                  flush=True)

        data = nncf.Dataset([x[None] for x in export[:8]])
        names = [op.get_friendly_name() for op in core.read_model(str(onnx)).get_ops()
                 if op.get_type_name() in ("Convolution", "MatMul")]
        for name, kwargs in settings(names).items():
            if not any(part in name for part in args.only.split(",")):
                continue
            row(name, nncf.quantize(core.read_model(str(onnx)), data, subset_size=8, **kwargs))
        if args.accuracy_control:
            out = Path(tmp) / "ac.xml"
            t = time.perf_counter()
            info = exporting.quantize_openvino_int8(onnx, out, export[:8], ref[:8] >= 0,
                                                   target=0.997)
            row(f"accuracy control, {len(info['fp32_convolutions'])} convolutions fp32 "
                f"({time.perf_counter() - t:.0f} s)", core.read_model(str(out)))


if __name__ == "__main__":
    main()
