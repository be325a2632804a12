"""Inference backends behind the one predictor API, .

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

``seglab.export(model_dir, ...)`` (:mod:`seglab.deploy`) writes the files, measures
each candidate's agreement (masks, decisions, the probabilities decisions are made
from) and speed on the
same inputs, and records them in ``backends.json``; it refuses to record a
backend that disagrees beyond the tolerance. ``load_model(...,
backend="auto")`` then picks the fastest backend that passed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.errors import SeglabError

BACKENDS_FILE = "backends.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OV_INT8_FILE = "model.ov-int8.xml"
NAMES = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16",
         "openvino-int8")
FILES = {"onnx": ONNX_FILE, "onnx-int8": INT8_FILE, "openvino": ONNX_FILE,
         "openvino-bf16": ONNX_FILE, "openvino-int8": OV_INT8_FILE}
"""The file each exported backend runs (the PyTorch ones run the weights)."""

Backend = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


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
    if name.endswith("bf16") and str(device) == "cpu" and not native_bf16():
        # Named by the user (auto never picks these here): run it, but say why it is slow.
        print(f"warning: backend {name}: {NO_NATIVE_BF16}; --backend auto picks the fastest "
              "checked backend here", file=sys.stderr, flush=True)
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


def time_backend(backend: Backend, batch: np.ndarray, repeats: int = 3,
                 warmup: int = 1, min_seconds: float = 0.0) -> float:
    """Median seconds per call after warm-up (first calls build kernels and caches)."""
    import time

    for _ in range(warmup):
        backend(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        backend(batch)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


TIMING_SECONDS = 0.5
"""Least seconds each backend runs when ``auto`` times it on a new CPU (a few calls)."""


# CPU features that change which backend is fastest (bf16 and int8 kernels); the
# rest of /proc/cpuinfo's flags do not, so they stay out of the signature.
_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16",
             "amx_int8", "amx_tile")


@functools.cache
def cpuinfo() -> dict[str, str]:
    """The first processor's lines of /proc/cpuinfo (every core of one machine is the same
    model), read once per process; empty where there is no such file."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_flags() -> set[str]:
    return set(cpuinfo().get("flags", "").split())


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX). Elsewhere bf16 is
    no speed-up: PyTorch emulates it (a ResNet50 U-Net's forward pass took 107x as long
    as fp32 on an AVX2-only AMD EPYC) and OpenVINO computes in fp32 instead."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def int8_dot_products() -> bool:
    """Whether this CPU adds int8 products in int32 (VNNI or AMX). Without it, ONNX
    Runtime's int8 kernels saturate in int16 unless the weights have 7 bits."""
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


SATURATING_INT8 = ("checked with 8-bit weights; this CPU has no VNNI, where ONNX Runtime's "
                   "int8 sums saturate and the masks change: seglab export it again here")

NO_NATIVE_BF16 = ("this CPU has no native bf16 (AVX512_BF16 or AMX): PyTorch emulates it, "
                  "many times slower than fp32, and OpenVINO computes fp32 instead")


def cpu_signature() -> str:
    """This CPU as far as backend speed goes: model name, the features that matter and
    the threads inference uses. Speed measured under another signature is not trusted."""
    import platform

    name = cpuinfo().get("model name") or platform.processor() or platform.machine()
    flags = _cpu_flags()
    features = " ".join(f for f in _FEATURES if f in flags) or "no-simd-flags"
    return f"{name} | {features} | {torch.get_num_threads()} threads"


def _cache_file(folder: Path, record: dict[str, Any]) -> Path:
    """Where this machine's timings of one exported model are kept: per user, outside the
    model folder (the zoo may sit in a read-only site-packages), keyed by the folder and
    the export it timed, so a re-export is re-timed."""
    import hashlib

    from seglab import __version__

    root = Path(os.environ.get("SEGLAB_CACHE") or Path.home() / ".cache" / "seglab")
    key = hashlib.sha256(json.dumps([str(folder.resolve()), record, __version__],
                                    sort_keys=True, default=str).encode()).hexdigest()[:20]
    return root / "backend-timings" / f"{key}.json"


def choose(folder: Path, requested: str = "auto", record: dict[str, Any] | None = None,
           net: torch.nn.Module | None = None) -> str:
    """``requested`` if named; for ``auto`` the fastest backend that passed ``export``'s
    check, on *this* CPU.

    Accuracy belongs to the model (``backends.json``); speed belongs to the machine. The
    export's timings are used only when they were taken on a CPU with the same
    signature (:func:`cpu_signature`); otherwise the passing backends are timed here
    once, briefly, and the result is cached per CPU signature and seglab version
    (:func:`timings_here`). A model folder never exported runs on PyTorch fp32.
    """
    if requested != "auto":
        return requested
    return timings_here(folder, record, net)["choice"]


def timings_here(folder: Path, record: dict[str, Any] | None = None,
                 net: torch.nn.Module | None = None, retime: bool = False) -> dict[str, Any]:
    """What ``auto`` decides on this machine and why: ``choice``, ``source`` ("export",
    "cache", "timed here" or "not exported"), ``ms_per_image`` per passing backend, and
    ``skipped``: passing backends this CPU cannot run fast, with the reason.

    bf16 backends are skipped on a CPU without native bf16 (:func:`native_bf16`), by rule
    rather than by timing: timing an emulated ``torch-bf16`` once would take minutes. So is
    an ``onnx-int8`` checked with 8-bit weights on a CPU without VNNI, where its masks are
    not those the check saw (:data:`seglab.deploy.convert.INT8_WEIGHT_BITS`).
    """
    record = read_checks(folder) if record is None else record
    checks = record.get("backends", {})
    passed = [name for name, c in checks.items() if c.get("passed") and available(name)]
    skipped: dict[str, str] = {}
    if not native_bf16():
        skipped = {n: NO_NATIVE_BF16 for n in passed if n.endswith("bf16")}
    if "onnx-int8" in passed and checks["onnx-int8"].get("weight_bits", 8) > 7 and (
            not int8_dot_products()):  # an export from before 7-bit weights
        skipped["onnx-int8"] = SATURATING_INT8
    passed = [n for n in passed if n not in skipped]
    here = cpu_signature()
    if len(passed) < 2:
        return {"choice": passed[0] if passed else "torch", "cpu": here,
                "source": "export" if passed else "not exported", "skipped": skipped,
                "ms_per_image": {n: checks[n].get("ms_per_image") for n in passed}}
    if record.get("timed_on") == here and not retime:
        ms = {n: checks[n]["ms_per_image"] for n in passed}
        return {"choice": min(ms, key=ms.__getitem__), "cpu": here, "source": "export",
                "skipped": skipped, "ms_per_image": ms}
    cache = _cache_file(folder, record)
    if cache.is_file() and not retime:
        try:
            known = json.loads(cache.read_text(encoding="utf-8"))
            if known.get("cpu") == here and set(known["ms_per_image"]) == set(passed):
                return {**known, "source": "cache", "skipped": skipped}
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a damaged cache is re-timed, never trusted
    if net is None:
        from seglab.models.folder import load_net

        net = load_net(folder)[0]
    shape = [1, *record.get("input_shape", [3, 256, 256])]
    batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ms = {n: round(1000 * time_backend(open_backend(n, net, folder), batch,
                                       min_seconds=TIMING_SECONDS), 3) for n in passed}
    result = {"choice": min(ms, key=ms.__getitem__), "cpu": here, "source": "timed here",
              "skipped": skipped, "ms_per_image": ms}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:  # no writable cache: time again next load, still correct
        pass
    return result


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logits to float32 probabilities; clipped so that no logit overflows ``exp``. The one
    place seglab turns logits into probabilities outside PyTorch."""
    return (1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float32), -80, 80)))).astype(np.float32)

