"""Writing the exported files: ONNX, ONNX Runtime static int8, and OpenVINO int8
through NNCF with accuracy-controlled per-layer fallback.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.metrics import agreement


def export_onnx(net: torch.nn.Module, path: Path, shape: tuple[int, int, int]) -> None:
    """Write ``net`` as ONNX with a dynamic batch axis (height and width fixed)."""
    net = net.eval()
    example = torch.zeros(1, *shape)
    tmp = path.with_name(f".{path.name}.tmp")
    # The TorchScript exporter handles smp models with their padding logic in one pass;
    # dynamo export is the fallback for builds where the legacy path is gone.
    try:
        torch.onnx.export(net, (example,), str(tmp), input_names=["image"],
                          output_names=["masks", "classes"], opset_version=17,
                          dynamic_axes={"image": {0: "batch"}, "masks": {0: "batch"},
                                        "classes": {0: "batch"}}, dynamo=False)
    except TypeError:  # pragma: no cover - torch without the dynamo switch
        torch.onnx.export(net, (example,), str(tmp), input_names=["image"],
                          output_names=["masks", "classes"], opset_version=17,
                          dynamic_axes={"image": {0: "batch"}, "masks": {0: "batch"},
                                        "classes": {0: "batch"}})
    os.replace(tmp, path)


INT8_WEIGHT_BITS = 7
"""ONNX Runtime int8 weights use 7 of their 8 bits (``reduce_range``). Without VNNI (AVX2,
AVX-512 without VNNI) its u8 x s8 kernels add products in saturating int16, and full-range
weights overflow there: the steel-defects zoo model's int8 masks agreed 0.9886 with fp32 on
an AVX2-only AMD EPYC (0.8704 on unseen strips) against 0.9982 (0.9296) with VNNI; with 7-bit
weights 0.9978 (0.9295) on the AVX2 CPU. So a check made on one CPU holds on every CPU."""


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation with ONNX Runtime, calibrated on real preprocessed inputs,
    with 7-bit weights (:data:`INT8_WEIGHT_BITS`)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    pre = out.with_name(f".{out.stem}.pre.onnx")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=INT8_WEIGHT_BITS == 7)
        os.replace(tmp, out)
    finally:
        for f in (pre, tmp):
            f.unlink(missing_ok=True)


ENCODER_NODES = ".*/encoder/.*"
"""Names of the encoder's operations in the ONNX graph (``/net/encoder/...``): what the int8
fallback keeps in fp32. Light encoders (EfficientNet, MobileNet) are depthwise convolutions
and squeeze-excite gates that int8 breaks and barely speeds up, while the U-Net's decoder
holds most of the multiply-adds: on the zoo's EfficientNet-B3 U-Net at 512x512 plain int8
masks agreed 0.958 with fp32 on real photos, the decoder alone in int8 0.996 (gate confidence
moved 0.002), and ran 1.2x OpenVINO fp32 where plain int8 ran 1.04x (AVX2-only AMD EPYC)."""


def quantize_openvino_int8(fp32: Path, out: Path, calibration: np.ndarray,
                           reference_masks: np.ndarray, *, threshold: float = 0.5,
                           min_dice: float = 0.995, target: float | None = None,
                           reference_scores: np.ndarray | None = None,
                           max_prob_diff: float = 0.02, prob_margin: float = 0.75,
                           max_reverted: int = 40, max_gap: float = 0.05,
                           max_ranked_ops: int = 150) -> dict[str, Any]:
    """Int8 OpenVINO model from NNCF post-training quantisation, with per-layer fp32 fallback.

    Plain quantisation first. Its masks must agree with ``reference_masks`` (the
    fp32 masks of ``calibration``) by ``target`` (default ``min_dice``), and, when
    ``reference_scores`` (the fp32 image-level class probabilities) are given, no class
    probability may move by more than ``prob_margin * max_prob_diff`` (a margin, as the
    export check also judges images calibration never saw). Below either, NNCF's
    accuracy control ranks the quantised layers by how much they cost and returns them
    to fp32 one at a time (at most ``max_reverted``) until both hold: its metric is
    ``min(mask agreement, 1 - (1 - target) * moved / limit)``, which reaches ``target``
    exactly where the probabilities reach their limit, so one search serves both.
    Hand-writing that search would duplicate NNCF; seglab only supplies the metric.
    The search compiles the model once per quantised layer, so it runs only when
    plain int8 masks are within ``max_gap`` of ``min_dice``: a model that int8 breaks
    (EfficientNet's depthwise layers: Dice 0.6) is refused in seconds, not hours,
    and only on models with at most ``max_ranked_ops`` quantised operations: NNCF
    ranks every one on every calibration image, again after each revert that does
    not suffice (ResNet50 U-Net, 87 operations: 11 min at 256x1600 on 2 cores; the
    EfficientNet-B3 U-Net, 293: 7 min per ranking pass at 512x512, more than an
    hour in all). Where the search cannot run (too many operations, or masks too far
    off) or still falls short, one cheap fallback is tried last: the encoder kept in fp32
    and only the decoder in int8 (:data:`ENCODER_NODES`), kept when it scores higher.
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    # NNCF logs at INFO on stdout, e.g. every node an ignored scope keeps in fp32 (130 lines
    # for the EfficientNet-B3 encoder); seglab reports what it kept in backends.json. Its
    # progress bars still show.
    nncf.set_log_level(logging.WARNING)

    logit = float(np.log(threshold / (1.0 - threshold)))
    target = min_dice if target is None else target
    limit = prob_margin * max_prob_diff

    def measure(compiled: Any, items: Any) -> tuple[float, float]:
        masks, refs, moved = [], [], 0.0
        for x, ref, ref_score in items:
            result = compiled(x)
            masks.append(np.asarray(result[0]) >= logit)
            refs.append(ref)
            if ref_score is not None:
                probs = 1.0 / (1.0 + np.exp(-np.asarray(result[1], np.float64)))
                moved = max(moved, float(np.abs(probs - ref_score).max(initial=0.0)))
        return agreement(np.concatenate(masks), np.concatenate(refs)), moved

    def score_of(dice: float, moved: float) -> float:
        return min(dice, 1.0 - (1.0 - target) * moved / limit)

    def score(compiled: Any, items: Any) -> float:
        return score_of(*measure(compiled, items))

    core = ov.Core()
    items = [(calibration[i:i + 1], reference_masks[i:i + 1],
              None if reference_scores is None else reference_scores[i:i + 1])
             for i in range(len(calibration))]
    data = nncf.Dataset(items, lambda item: item[0])
    quantized = nncf.quantize(core.read_model(str(fp32)), data, subset_size=len(items))
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    dice, moved = measure(core.compile_model(quantized, "CPU", config), items)
    info: dict[str, Any] = {"plain_int8_mask_dice": round(dice, 6),
                            "plain_int8_prob_moved": round(moved, 6)}
    ranked = len({c.get_node().get_friendly_name() for op in quantized.get_ops()
                  if op.get_type_name() == "FakeQuantize" for c in op.output(0).get_target_inputs()
                  if c.get_node().get_type_name() != "FakeQuantize"})
    info["quantized_operations"] = ranked
    best = score_of(dice, moved)
    searchable = min_dice - max_gap <= dice and ranked <= max_ranked_ops
    if best < target and searchable:
        info["accuracy_control"] = "ran"
        quantized = nncf.quantize_with_accuracy_control(
            core.read_model(str(fp32)), data, data, score, max_drop=1.0 - target,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(items),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=max_reverted))
        best = score(core.compile_model(quantized, "CPU", config), items)
    elif best < target:
        info["accuracy_control"] = (
            f"skipped: {ranked} quantised operations > {max_ranked_ops} (its ranking would "
            "take too long)" if ranked > max_ranked_ops else
            f"skipped: plain int8 masks agree {dice:.4f}, more than {max_gap} under {min_dice}")
    if best < target:  # the cheap structural fallback: only the decoder in int8
        scoped = nncf.quantize(core.read_model(str(fp32)), data, subset_size=len(items),
                               ignored_scope=nncf.IgnoredScope(patterns=[ENCODER_NODES],
                                                               validate=False))
        scoped_dice, scoped_moved = measure(core.compile_model(scoped, "CPU", config), items)
        info.update(encoder_fp32_mask_dice=round(scoped_dice, 6),
                    encoder_fp32_prob_moved=round(scoped_moved, 6))
        if score_of(scoped_dice, scoped_moved) > best:
            quantized, info["int8_part"] = scoped, "decoder (encoder kept in fp32)"
    convs = [op for op in quantized.get_ops() if op.get_type_name() == "Convolution"]
    kept = sorted(op.get_friendly_name() for op in convs
                  if op.input_value(0).get_node().get_type_name() != "FakeQuantize")
    info.update(int8_convolutions=len(convs) - len(kept), fp32_convolutions=kept)
    # Written beside the target, then renamed: the .xml and its .bin appear together.
    tmp = out.with_name(f".{out.stem}.tmp.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(tmp, out)
    return info


def _remove(file: Path) -> None:
    """Delete an exported model file (and an OpenVINO IR's weights beside it)."""
    file.unlink(missing_ok=True)
    if file.suffix == ".xml":
        file.with_suffix(".bin").unlink(missing_ok=True)

