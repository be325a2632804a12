"""Inference backends behind the one predictor API, and ``export`` that checks them.

A backend maps a preprocessed ``(N, 3, H, W)`` float32 batch to
``(mask_logits, class_logits)`` as float32 numpy arrays. The reference is PyTorch
eager fp32; the others must agree with it on sample inputs before they are used:

- ``torch-bf16``: channels-last tensors + bfloat16 autocast (AMX / AVX-512 BF16).
- ``onnx``: ONNX Runtime on ``model.onnx``.
- ``onnx-int8``: ONNX Runtime on a static int8 quantisation calibrated on samples.
- ``openvino``: OpenVINO on ``model.onnx`` (bf16 on CPUs with AMX).

``export(model_dir, ...)`` writes the files, measures each candidate's agreement
and speed on the same inputs, and records them in ``backends.json``; it refuses
to record a backend that disagrees beyond the tolerance. ``load_model(...,
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
NAMES = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino")

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
    """OpenVINO on the CPU, reading the ONNX file (bf16 where the CPU has AMX)."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.name = "openvino"

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.compiled(np.ascontiguousarray(batch))
        return (np.asarray(result[0], np.float32), np.asarray(result[1], np.float32))


def available(name: str) -> bool:
    """Whether the runtime a backend needs is installed."""
    import importlib.util

    need = {"onnx": "onnxruntime", "onnx-int8": "onnxruntime", "openvino": "openvino"}
    module = need.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def open_backend(name: str, net: torch.nn.Module, folder: Path,
                 device: str | torch.device = "cpu") -> Backend:
    """The backend ``name`` for a model folder (exported files must exist)."""
    if name not in NAMES:
        raise SeglabError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)} or auto")
    if name in ("torch", "torch-bf16"):
        return TorchBackend(net, bf16=name == "torch-bf16", device=device)
    if not available(name):
        runtime = "openvino" if name == "openvino" else "onnxruntime"
        raise SeglabError(f"backend {name} needs {runtime} installed")
    file = folder / (INT8_FILE if name == "onnx-int8" else ONNX_FILE)
    if not file.is_file():
        raise SeglabError(f"backend {name} needs {file}: run `seglab export {folder}` first")
    if name == "openvino":
        return OpenVinoBackend(file)
    return OnnxBackend(file, name=name)


def read_checks(folder: Path) -> dict[str, Any]:
    path = folder / BACKENDS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SeglabError(f"{path} is not valid JSON ({exc}); run seglab export again") from None


def choose(folder: Path, requested: str = "auto") -> str:
    """``requested`` if named; for ``auto`` the fastest backend that passed ``export``'s check.

    A model folder that was never exported runs on the reference (PyTorch fp32).
    """
    if requested != "auto":
        return requested
    checks = read_checks(folder).get("backends", {})
    passed = [(c["ms_per_image"], name) for name, c in checks.items()
              if c.get("passed") and available(name)]
    return min(passed)[1] if passed else "torch"


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two sets of binary masks over all pixels (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


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


def export(model_dir: str | os.PathLike[str], *, samples: np.ndarray,
           formats: Sequence[str] = ("onnx", "openvino", "torch-bf16", "onnx-int8"),
           threshold: float = 0.5, min_dice: float = 0.995, max_prob_diff: float = 0.02,
           timing_batch: int = 1) -> dict[str, Any]:
    """Export a model folder, check every backend against PyTorch fp32, record the results.

    ``samples`` are preprocessed inputs ``(N, 3, H, W)`` (real images where the
    user has them). A backend passes when its masks agree with the fp32 masks
    (Dice over all pixels >= ``min_dice``) and its probabilities differ by at most
    ``max_prob_diff`` at the 99.9th percentile. A failing exported file is deleted,
    never left where ``auto`` could pick it.
    """
    from seglab.modelfolder import load_net

    folder = Path(model_dir)
    net, config = load_net(folder)
    reference = TorchBackend(net)
    ref_logits, ref_cls = reference(samples)
    ref_probs = _sigmoid(ref_logits)
    ref_masks = ref_probs >= threshold
    timing = samples[:timing_batch]
    results: dict[str, Any] = {"torch": {
        "passed": True, "reference": True, "mask_dice": 1.0, "prob_diff_p999": 0.0,
        "ms_per_image": 1000 * time_backend(reference, timing) / len(timing)}}
    if any(f in formats for f in ("onnx", "openvino", "onnx-int8")):
        export_onnx(copy.deepcopy(net), folder / ONNX_FILE, tuple(samples.shape[1:]))
    if "onnx-int8" in formats:
        quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, samples)
    for name in formats:
        if not available(name):
            results[name] = {"passed": False, "error": "runtime not installed"}
            continue
        # A copy each: torch-bf16 converts its network to channels-last in place.
        backend = open_backend(name, copy.deepcopy(net), folder)
        logits, cls = backend(samples)
        probs = _sigmoid(logits)
        diff = float(np.quantile(np.abs(probs - ref_probs), 0.999))
        dice = mask_dice(probs >= threshold, ref_masks)
        cls_diff = float(np.abs(_sigmoid(cls) - _sigmoid(ref_cls)).max())
        passed = dice >= min_dice and diff <= max_prob_diff
        results[name] = {"passed": passed, "mask_dice": round(dice, 6),
                         "prob_diff_p999": round(diff, 6), "class_prob_diff_max":
                         round(cls_diff, 6),
                         "ms_per_image": 1000 * time_backend(backend, timing) / len(timing)}
        if not passed and name == "onnx-int8":
            (folder / INT8_FILE).unlink(missing_ok=True)
    if not results.get("onnx", {}).get("passed", True):
        for f in (ONNX_FILE, INT8_FILE):
            (folder / f).unlink(missing_ok=True)
        onnx = results["onnx"]
        raise ExportError(f"the ONNX export of {folder} disagrees with PyTorch (mask Dice "
                          f"{onnx.get('mask_dice')}, probability difference "
                          f"{onnx.get('prob_diff_p999')}); not saved")
    record = {"input_shape": list(samples.shape[1:]), "samples": len(samples),
              "threshold": threshold, "min_dice": min_dice, "max_prob_diff": max_prob_diff,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "recipe": config.recipe, "backends": results}
    write_text_atomic(folder / BACKENDS_FILE, json.dumps(record, indent=2) + "\n")
    return record


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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float32), -80, 80)))
