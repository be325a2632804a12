"""``export(model_dir)``: convert, then measure each backend's agreement with
PyTorch eager fp32 (masks, decisions, probabilities) and its speed on the same
inputs, and record the ones that pass in ``backends.json``.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from seglab.data.files import write_text_atomic
from seglab.deploy.convert import (
    INT8_WEIGHT_BITS,
    _remove,
    export_onnx,
    quantize_int8,
    quantize_openvino_int8,
)
from seglab.errors import ExportError, SeglabError
from seglab.infer.runtimes import (
    BACKENDS_FILE,
    FILES,
    INT8_FILE,
    NO_NATIVE_BF16,
    ONNX_FILE,
    OV_INT8_FILE,
    TorchBackend,
    available,
    cpu_signature,
    native_bf16,
    open_backend,
    sigmoid,
    time_backend,
)
from seglab.metrics import agreement
from seglab.results import Result

EXPORTS = ("onnx", "openvino", "openvino-bf16", "torch-bf16", "onnx-int8", "openvino-int8")
"""What ``export`` checks by default: every backend but the reference."""

TIMING_SECONDS = 1.0
"""Export times each backend for at least this long: ``auto`` picks by these medians, and
on 2 cores a three-call median still mis-ordered backends 5% apart."""


class ExportRecord(Result):
    """What ``export`` measured (also ``backends.json``): per backend, its agreement with
    PyTorch fp32, its speed and whether it passed; plus the inputs it was measured on."""

    input_shape: list[int]
    samples: int
    calibration_samples: int
    heldout_samples: int
    threshold: float
    min_dice: float
    max_prob_diff: float
    torch: str
    threads: int
    timed_on: str = ""
    """The CPU the speeds were measured on (``runtimes.cpu_signature``); ``auto`` trusts
    them only on a CPU with the same signature and times the backends itself elsewhere."""
    recipe: str | None
    backends: dict[str, dict[str, Any]]


def export(model_dir: str | os.PathLike[str], *,
           samples: np.ndarray | Sequence[str | os.PathLike[str]] | None = None,
           formats: Sequence[str] = EXPORTS, threshold: float = 0.5,
           min_dice: float = 0.995, max_prob_diff: float = 0.02, holdout: float = 0.5,
           timing_batch: int = 1, keep_refused: bool = False) -> ExportRecord:
    """Export a model folder, check every backend against PyTorch fp32, record the results.

    ``model_dir`` is a model folder or zoo name. ``samples`` are preprocessed inputs
    ``(N, 3, H, W)``, or image files / folders / globs (read by :func:`sample_inputs`);
    real images where the user has them, smooth random images when ``None``. A
    backend passes when, on the samples, it shows a person what PyTorch fp32 shows:

    - its masks agree (:func:`agreement` >= ``min_dice``);
    - the model's decisions are the same on every sample (each class present or
      not after the model's own post-processing; the cut-out gate's verdict);
    - the image-level probabilities those decisions are made from (class
      probabilities, gate confidence) differ by at most ``max_prob_diff``.

    Int8 models are calibrated on the first part of the samples and must also
    agree on the last ``holdout`` share they never saw, so a calibration (and the
    fp32 fallback search) tuned to its own images cannot pass on them alone.
    A failing exported file is deleted, never left where ``auto`` could pick it
    (``keep_refused=True`` keeps it for benchmarks; ``auto`` still skips it).
    """
    from seglab.models import zoo
    from seglab.models.folder import load_net

    folder = zoo.resolve(model_dir)
    if samples is None or not isinstance(samples, np.ndarray):
        samples = sample_inputs(folder, list(samples or []))
    net, config = load_net(folder)
    held = int(len(samples) * holdout) if len(samples) > 1 else 0
    calibration = samples[:len(samples) - held]
    reference = TorchBackend(net)
    ref_logits, ref_cls = reference(samples)
    ref_probs = sigmoid(ref_logits)
    ref_masks = ref_probs >= threshold
    ref_present, ref_scores = _decisions(ref_probs, sigmoid(ref_cls), config)
    timing = samples[:timing_batch]
    results: dict[str, Any] = {"torch": {
        "passed": True, "reference": True, "mask_dice": 1.0, "score_diff": 0.0,
        "prob_diff_p999": 0.0,
        "ms_per_image": 1000 * time_backend(reference, timing, min_seconds=TIMING_SECONDS)
        / len(timing)}}
    quantized: dict[str, Any] = {}
    if any(f in FILES for f in formats):
        export_onnx(copy.deepcopy(net), folder / ONNX_FILE, tuple(samples.shape[1:]))
    # ONNX first: if the export itself disagrees, nothing is quantised from it.
    for name in sorted(formats, key=lambda n: n != "onnx"):
        if not available(name):
            results[name] = {"passed": False, "error": "runtime not installed"}
            continue
        if name.endswith("bf16") and not native_bf16():
            # Checked here it would be fp32 (OpenVINO) or take an hour (emulated PyTorch):
            # neither says how bf16 would do on a CPU that has it, so it is not recorded.
            results[name] = {"passed": False, "skipped": NO_NATIVE_BF16}
            continue
        if name == "onnx-int8":
            quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, calibration)
        elif name == "openvino-int8":
            quantized = quantize_openvino_int8(folder / ONNX_FILE, folder / OV_INT8_FILE,
                                               calibration, ref_masks[:len(calibration)],
                                               threshold=threshold, min_dice=min_dice,
                                               reference_scores=sigmoid(ref_cls[:len(calibration)]),
                                               max_prob_diff=max_prob_diff)
        # A copy each: torch-bf16 converts its network to channels-last in place.
        backend = open_backend(name, copy.deepcopy(net), folder)
        logits, cls = backend(samples)
        probs = sigmoid(logits)
        present, scores = _decisions(probs, sigmoid(cls), config)
        result = {"mask_dice": round(agreement(probs >= threshold, ref_masks), 6),
                  "decision_flips": int((present != ref_present).sum()),
                  "score_diff": round(float(np.abs(scores - ref_scores).max(initial=0)), 6),
                  "prob_diff_p999": round(float(np.quantile(np.abs(probs - ref_probs), 0.999)),
                                          6)}
        if name.endswith("int8") and held:
            result["heldout_mask_dice"] = round(agreement(probs[-held:] >= threshold,
                                                          ref_masks[-held:]), 6)
        reasons = _refusals(result, min_dice, max_prob_diff)
        results[name] = {"passed": not reasons, "refused_because": "; ".join(reasons),
                         **result,
                         "ms_per_image": 1000 * time_backend(
                             backend, timing, min_seconds=TIMING_SECONDS) / len(timing)}
        if name == "openvino-int8":
            results[name].update(quantized)
        elif name == "onnx-int8":
            results[name]["weight_bits"] = INT8_WEIGHT_BITS
        if reasons and name.endswith("int8") and not keep_refused:
            _remove(folder / FILES[name])
        if name == "onnx" and reasons:
            break
    if not results.get("onnx", {}).get("passed", True):
        for f in set(FILES.values()):
            _remove(folder / f)
        raise ExportError(f"the ONNX export of {folder} disagrees with PyTorch "
                          f"({results['onnx']['refused_because']}); not saved")
    record = ExportRecord(input_shape=list(samples.shape[1:]), samples=len(samples),
                          calibration_samples=len(calibration), heldout_samples=held,
                          threshold=threshold, min_dice=min_dice, max_prob_diff=max_prob_diff,
                          torch=torch.__version__, threads=torch.get_num_threads(),
                          timed_on=cpu_signature(),
                          recipe=config.recipe, backends=results)
    write_text_atomic(folder / BACKENDS_FILE, record.to_json())
    return record


def _decisions(probs: np.ndarray, class_probs: np.ndarray, config: Any
               ) -> tuple[np.ndarray, np.ndarray]:
    """What the model decides on each sample, and the numbers it decides from.

    Returns ``present`` ``(N, C + gated)`` booleans (each class kept by the model's
    post-processing; the gate's verdict for a cut-out model) and ``scores``
    (class probabilities, gate confidence), both at the export's input size.
    """
    from seglab.infer.gate import judge
    from seglab.infer.postprocess import binarize

    present, scores = [], []
    for p, c in zip(probs, class_probs, strict=True):
        if config.gate is None:  # defects: which classes post-processing keeps
            flags = list(binarize(p, c, config.postprocess).reshape(len(p), -1).any(axis=1))
            values = list(c)
        else:  # cut-out: the cleaned mask and verdict exactly as `cutout.remove` makes them
            _, mask, verdict = judge(p[0], config)
            flags, values = [mask.any(), verdict.accepted], [*c, verdict.confidence]
        present.append(flags)
        scores.append(values)
    return np.asarray(present, bool), np.asarray(scores, np.float64)


def _refusals(result: dict[str, Any], min_dice: float, max_prob_diff: float) -> list[str]:
    """Why a backend's results fail the export check (empty when it passes)."""
    reasons = []
    if result["mask_dice"] < min_dice:
        reasons.append(f"mask agreement {result['mask_dice']:.4f} < {min_dice}")
    if result.get("heldout_mask_dice", 1.0) < min_dice:
        reasons.append(f"mask agreement on held-out samples {result['heldout_mask_dice']:.4f}"
                       f" < {min_dice}")
    if result["decision_flips"]:
        reasons.append(f"{result['decision_flips']} decision(s) differ from PyTorch's")
    if result["score_diff"] > max_prob_diff:
        reasons.append(f"class probability or gate confidence moved by "
                       f"{result['score_diff']:.3f} > {max_prob_diff}")
    return reasons


def sample_inputs(model_dir: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]],
                  count: int = 8, size: tuple[int, int] | None = None, seed: int = 0
                  ) -> np.ndarray:
    """Preprocessed ``(N, 3, H, W)`` inputs for the export check.

    Real images when given (resized to the model's input size or ``size``);
    otherwise smooth random images, which exercise every layer but say less about
    real agreement than the user's own photos do.
    """
    import cv2

    from seglab.data.images import list_images, read_image
    from seglab.errors import ImageReadError
    from seglab.infer.predictor import preprocess
    from seglab.models.folder import read_config

    config = read_config(model_dir)
    hw = tuple(config.input_size or size or ())
    if len(hw) != 2:
        raise SeglabError("this model was trained at full size: give --size HEIGHT WIDTH")
    arrays = []
    for path in list_images(*images)[:count] if images else []:
        try:
            arrays.append(cv2.resize(read_image(path), (hw[1], hw[0]),
                                     interpolation=cv2.INTER_AREA))
        except ImageReadError as exc:
            print(f"skipped: {exc}")
    if not arrays:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            noise = rng.integers(0, 256, (hw[0] // 8 + 1, hw[1] // 8 + 1, 3)).astype(np.uint8)
            arrays.append(cv2.resize(noise, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC))
    mean, std = config.normalization.on_uint8()
    return np.stack([preprocess(a, hw, mean, std) for a in arrays])

