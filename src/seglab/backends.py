"""Inference backends behind the one predictor API, and ``export`` that checks them.

A backend maps a preprocessed ``(N, 3, H, W)`` float32 batch to
``(mask_logits, class_logits)`` as float32 numpy arrays. The reference is PyTorch
eager fp32; the others must agree with it on sample inputs before they are used:

- ``torch-bf16``: channels-last tensors + bfloat16 autocast (AMX / AVX-512 BF16).
- ``onnx``: ONNX Runtime on ``model.onnx``.
- ``onnx-int8``: ONNX Runtime on a static int8 quantisation calibrated on samples.
- ``openvino`` / ``openvino-bf16``: OpenVINO on ``model.onnx`` in fp32 / bf16 arithmetic.
- ``openvino-int8``: OpenVINO on an int8 model quantised with NNCF; layers whose
  quantisation flips mask pixels are found by NNCF's accuracy control and kept
  in fp32 until the masks agree (per-layer fallback).

``export(model_dir, ...)`` writes the files, measures each candidate's agreement
(masks, decisions, the probabilities decisions are made from) and speed on the
same inputs, and records them in ``backends.json``; it refuses to record a
backend that disagrees beyond the tolerance. ``load_model(...,
backend="auto")`` then picks the fastest backend that passed.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.errors import SeglabError
from seglab.io import write_text_atomic

BACKENDS_FILE = "backends.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OV_INT8_FILE = "model.ov-int8.xml"
NAMES = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16",
         "openvino-int8")
FILES = {"onnx": ONNX_FILE, "onnx-int8": INT8_FILE, "openvino": ONNX_FILE,
         "openvino-bf16": ONNX_FILE, "openvino-int8": OV_INT8_FILE}
"""The file each exported backend runs (the PyTorch ones run the weights)."""
EXPORTS = ("onnx", "openvino", "openvino-bf16", "torch-bf16", "onnx-int8", "openvino-int8")
"""What ``export`` checks by default: every backend but the reference."""

TIMING_SECONDS = 1.0
"""Export times each backend for at least this long: ``auto`` picks by these medians, and
on 2 cores a three-call median still mis-ordered backends 5% apart."""

Backend = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ExportError(SeglabError):
    """An exported model disagrees with PyTorch, or its runtime is missing."""


class TorchBackend:
    """PyTorch eager; ``bf16=True`` adds channels-last and bfloat16 autocast."""

    def __init__(self, net: torch.nn.Module, bf16: bool = False,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.bf16 = bf16
        self.net = net.to(self.device).eval()
        if bf16:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.name = "torch-bf16" if bf16 else "torch"

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(batch).to(self.device)
        if self.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16
               else nullcontext())
        with ctx:
            masks, labels = self.net(x)
        return masks.float().cpu().numpy(), labels.float().cpu().numpy()


class OnnxBackend:
    """ONNX Runtime on the CPU (fp32 or int8 model file)."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None,
                 name: str = "onnx") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.name = name

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks, labels = self.session.run(None, {"image": np.ascontiguousarray(batch)})
        return masks.astype(np.float32, copy=False), labels.astype(np.float32, copy=False)


class OpenVinoBackend:
    """OpenVINO on the CPU: fp32 or bf16 arithmetic on the ONNX file, or the int8 IR.

    The precision is always stated: left alone, OpenVINO computes in bf16 on any
    CPU with AVX-512 BF16, which without AMX is slower than fp32 and flips pixels.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None,
                 precision: str = "f32", name: str = "openvino") -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.name = name

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.compiled(np.ascontiguousarray(batch))
        return (np.asarray(result[0], np.float32), np.asarray(result[1], np.float32))


def available(name: str) -> bool:
    """Whether the runtime a backend needs is installed."""
    import importlib.util

    module = ("onnxruntime" if name.startswith("onnx") else
              "openvino" if name.startswith("openvino") else None)
    return module is None or importlib.util.find_spec(module) is not None


def open_backend(name: str, net: torch.nn.Module, folder: Path,
                 device: str | torch.device = "cpu") -> Backend:
    """The backend ``name`` for a model folder (exported files must exist)."""
    if name not in NAMES:
        raise SeglabError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)} or auto")
    if name in ("torch", "torch-bf16"):
        return TorchBackend(net, bf16=name == "torch-bf16", device=device)
    if not available(name):
        runtime = "openvino" if name.startswith("openvino") else "onnxruntime"
        raise SeglabError(f"backend {name} needs {runtime} installed")
    file = folder / FILES[name]
    if not file.is_file():
        raise SeglabError(f"backend {name} needs {file}: run `seglab export {folder}` first")
    if name.startswith("openvino"):
        return OpenVinoBackend(file, precision="bf16" if name == "openvino-bf16" else "f32",
                               name=name)
    return OnnxBackend(file, name=name)


def read_checks(folder: Path) -> dict[str, Any]:
    path = folder / BACKENDS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SeglabError(f"{path} is not valid JSON ({exc}); run seglab export again") from None


def choose(folder: Path, requested: str = "auto", record: dict[str, Any] | None = None
           ) -> str:
    """``requested`` if named; for ``auto`` the fastest backend that passed ``export``'s check.

    A model folder that was never exported runs on the reference (PyTorch fp32).
    ``record`` is ``backends.json`` when the caller has read it already.
    """
    if requested != "auto":
        return requested
    checks = (read_checks(folder) if record is None else record).get("backends", {})
    passed = [(c["ms_per_image"], name) for name, c in checks.items()
              if c.get("passed") and available(name)]
    return min(passed)[1] if passed else "torch"


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two sets of binary masks over all pixels (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def agreement(masks: np.ndarray, reference: np.ndarray) -> float:
    """How far a backend's ``(N, C, H, W)`` masks agree with the reference's: the worse of
    the Dice over all pixels and the mean per-image Dice.

    Pooled Dice alone lets a large mask hide a small one that a backend erased;
    the per-image mean alone lets empty images pad the score. Both must hold.
    """
    per_image = float(np.mean([mask_dice(m, r) for m, r in zip(masks, reference, strict=True)]))
    return min(mask_dice(masks, reference), per_image)


def time_backend(backend: Backend, batch: np.ndarray, repeats: int = 3,
                 warmup: int = 1, min_seconds: float = 0.0) -> float:
    """Median seconds per call after warm-up (first calls build kernels and caches)."""
    for _ in range(warmup):
        backend(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        backend(batch)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


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


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation with ONNX Runtime, calibrated on real preprocessed inputs."""
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
                        per_channel=True)
        os.replace(tmp, out)
    finally:
        for f in (pre, tmp):
            f.unlink(missing_ok=True)


def quantize_openvino_int8(fp32: Path, out: Path, calibration: np.ndarray,
                           reference_masks: np.ndarray, *, threshold: float = 0.5,
                           min_dice: float = 0.995, target: float | None = None,
                           max_reverted: int = 40, max_gap: float = 0.05) -> dict[str, Any]:
    """Int8 OpenVINO model from NNCF post-training quantisation, with per-layer fp32 fallback.

    Plain quantisation first. Its masks must agree with ``reference_masks`` (the
    fp32 masks of ``calibration``) by ``target`` (default ``min_dice``); below that,
    NNCF's accuracy control ranks the quantised layers by how much they cost and returns them to
    fp32 one at a time (at most ``max_reverted``) until the masks agree.
    Hand-writing that search would duplicate NNCF; seglab only supplies the metric
    (mask agreement). The search compiles the model once per quantised layer, so
    it runs only when plain int8 is within ``max_gap`` of ``min_dice``: a model
    that int8 breaks (EfficientNet's depthwise layers: Dice 0.6) is refused in
    seconds, not hours.
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    logit = float(np.log(threshold / (1.0 - threshold)))

    def score(compiled: Any, items: Any) -> float:
        pairs = [(np.asarray(compiled(x)[0]) >= logit, ref) for x, ref in items]
        return agreement(np.concatenate([p for p, _ in pairs]),
                         np.concatenate([r for _, r in pairs]))

    core = ov.Core()
    items = [(calibration[i:i + 1], reference_masks[i:i + 1]) for i in range(len(calibration))]
    data = nncf.Dataset(items, lambda item: item[0])
    quantized = nncf.quantize(core.read_model(str(fp32)), data, subset_size=len(items))
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    dice = score(core.compile_model(quantized, "CPU", config), items)
    info: dict[str, Any] = {"plain_int8_mask_dice": round(dice, 6)}
    target = min_dice if target is None else target
    if min_dice - max_gap <= dice < target:
        quantized = nncf.quantize_with_accuracy_control(
            core.read_model(str(fp32)), data, data, score, max_drop=1.0 - target,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(items),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=max_reverted))
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


def export(model_dir: str | os.PathLike[str], *, samples: np.ndarray,
           formats: Sequence[str] = EXPORTS, threshold: float = 0.5,
           min_dice: float = 0.995, max_prob_diff: float = 0.02, holdout: float = 0.5,
           timing_batch: int = 1, keep_refused: bool = False) -> dict[str, Any]:
    """Export a model folder, check every backend against PyTorch fp32, record the results.

    ``samples`` are preprocessed inputs ``(N, 3, H, W)`` (real images where the
    user has them). A backend passes when, on the samples, it shows a person what
    PyTorch fp32 shows:

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
    from seglab.modelfolder import load_net

    folder = Path(model_dir)
    net, config = load_net(folder)
    held = int(len(samples) * holdout) if len(samples) > 1 else 0
    calibration = samples[:len(samples) - held]
    reference = TorchBackend(net)
    ref_logits, ref_cls = reference(samples)
    ref_probs = _sigmoid(ref_logits)
    ref_masks = ref_probs >= threshold
    ref_present, ref_scores = _decisions(ref_probs, _sigmoid(ref_cls), config)
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
        if name == "onnx-int8":
            quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, calibration)
        elif name == "openvino-int8":
            quantized = quantize_openvino_int8(folder / ONNX_FILE, folder / OV_INT8_FILE,
                                               calibration, ref_masks[:len(calibration)],
                                               threshold=threshold, min_dice=min_dice)
        # A copy each: torch-bf16 converts its network to channels-last in place.
        backend = open_backend(name, copy.deepcopy(net), folder)
        logits, cls = backend(samples)
        probs = _sigmoid(logits)
        present, scores = _decisions(probs, _sigmoid(cls), config)
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
        if reasons and name.endswith("int8") and not keep_refused:
            _remove(folder / FILES[name])
        if name == "onnx" and reasons:
            break
    if not results.get("onnx", {}).get("passed", True):
        for f in set(FILES.values()):
            _remove(folder / f)
        raise ExportError(f"the ONNX export of {folder} disagrees with PyTorch "
                          f"({results['onnx']['refused_because']}); not saved")
    record = {"input_shape": list(samples.shape[1:]), "samples": len(samples),
              "calibration_samples": len(calibration), "heldout_samples": held,
              "threshold": threshold, "min_dice": min_dice, "max_prob_diff": max_prob_diff,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "recipe": config.recipe, "backends": results}
    write_text_atomic(folder / BACKENDS_FILE, json.dumps(record, indent=2) + "\n")
    return record


def _decisions(probs: np.ndarray, class_probs: np.ndarray, config: Any
               ) -> tuple[np.ndarray, np.ndarray]:
    """What the model decides on each sample, and the numbers it decides from.

    Returns ``present`` ``(N, C + gated)`` booleans (each class kept by the model's
    post-processing; the gate's verdict for a cut-out model) and ``scores``
    (class probabilities, gate confidence), both at the export's input size.
    """
    from seglab.cutout import judge
    from seglab.postprocess import binarize

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

    from seglab.errors import ImageReadError
    from seglab.io import list_images, read_image
    from seglab.modelfolder import read_config
    from seglab.predict import preprocess

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
    mean = np.asarray(config.normalization.mean, np.float32) * 255.0
    std = np.asarray(config.normalization.std, np.float32) * 255.0
    return np.stack([preprocess(a, hw, mean, std) for a in arrays])


def _remove(file: Path) -> None:
    """Delete an exported model file (and an OpenVINO IR's weights beside it)."""
    file.unlink(missing_ok=True)
    if file.suffix == ".xml":
        file.with_suffix(".bin").unlink(missing_ok=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float32), -80, 80)))
