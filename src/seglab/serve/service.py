"""The service behind the API and the pages: loaded models, inference slots,
the store, and the errors both doors report.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from seglab.data import rle
from seglab.data.images import read_image
from seglab.errors import ImageReadError
from seglab.infer.predictor import Predictor, load_model
from seglab.serve.config import ServerSpec
from seglab.serve.store import Item, Store

log = logging.getLogger("seglab.serve")
T = TypeVar("T")

READ_ERROR_STATUS = {"empty": 400, "missing": 400, "not_image": 415, "too_large": 413,
                     "corrupt": 422}
"""HTTP status for each kind of unreadable upload."""


class ApiError(Exception):
    """A request the service refuses, with its HTTP status and a machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Cancelled(Exception):
    """A request's work stopped between stages: its deadline passed or its client left."""


class Job:
    """One file's work in a worker thread, cancellable between stages (decode, model,
    post-processing, storing). PyTorch cannot be interrupted inside a forward pass, so
    the stages are the points of cancellation; the store's insert is guarded so that a
    cancelled job stores nothing and a stored one is never answered as cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.committed = False

    def check(self) -> None:
        if self.reason:
            raise Cancelled(self.reason)

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        with self._lock:
            self.check()
            yield
            self.committed = True

    def cancel(self, reason: str) -> bool:
        """Cancel unless the result is already stored; ``True`` when cancelled."""
        with self._lock:
            if self.committed:
                return False
            self.reason = self.reason or reason
            return True


async def _watch(request: Request, job: Job) -> None:
    """Cancel the job when its client closes the connection."""
    while True:
        await asyncio.sleep(0.2)
        if await request.is_disconnected():
            job.cancel("the client closed the connection")
            return


@dataclass
class LoadedModel:
    name: str
    path: Path
    predictor: Predictor

    @property
    def task(self) -> str:
        return self.predictor.config.task

    def as_dict(self) -> dict[str, Any]:
        config = self.predictor.config
        from seglab.models.network import count_parameters

        return {"name": self.name, "task": self.task, "recipe": config.recipe,
                "arch": config.model.arch, "encoder": config.model.encoder,
                "classes": config.class_names, "input_size": config.input_size,
                "parameters": count_parameters(self.predictor.net),
                "metrics": _headline_metrics({**_gate_report(self.path), **config.metrics}),
                "gate": config.gate.model_dump() if config.gate else None}


def _gate_report(folder: Path) -> dict[str, Any]:
    """A cut-out model's measured figures live in its gate report, beside the card."""
    import json

    try:
        return json.loads((folder / "gate_report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The model card's measured figures that fit on one line (numbers only)."""
    keys = ("mean_dice", "mean_dice_defective", "all_empty_mean_dice", "images", "mean_iou",
            "accepted_share", "precision_of_accepted", "name")
    out = {k: metrics[k] for k in keys if k in metrics}
    if isinstance(metrics.get("zoo"), dict):  # a released model's held-out figures
        out["held_out"] = {k: v for k, v in metrics["zoo"].items()
                           if isinstance(v, int | float | str) or v is None}
    for key, value in metrics.items():
        if isinstance(value, dict) and key not in out and "mean_iou" in value:
            out[key] = {k: value[k] for k in keys if k in value}
    return out


class Service:
    """Models, storage and the inference slots; what the routes call."""

    def __init__(self, models: Sequence[LoadedModel], store: Store, spec: ServerSpec) -> None:
        self.models = {m.name: m for m in models}
        self.store = store
        self.spec = spec
        self._slots: asyncio.Semaphore | None = None
        self.batch_errors: OrderedDict[str, list[dict]] = OrderedDict()
        """Files refused in recent page uploads, shown on the batch page (last 100 batches)."""

    def remember_errors(self, batch: str, errors: list[dict]) -> None:
        self.batch_errors[batch] = errors
        while len(self.batch_errors) > 100:
            self.batch_errors.popitem(last=False)

    def model_for(self, task: str, name: str | None) -> LoadedModel:
        if name:
            model = self.models.get(name)
            if model is None or model.task != task:
                known = [m.name for m in self.models.values() if m.task == task]
                raise ApiError(404, "unknown_model",
                               f"no {task} model named {name!r} (loaded: {', '.join(known)})")
            return model
        for model in self.models.values():
            if model.task == task:
                return model
        raise ApiError(404, "no_model", f"no {task} model is loaded: start seglab serve with "
                                        f"a {task} model folder")

    async def run(self, fn: Callable[..., T], *args: Any, request: Request | None = None,
                  started: float | None = None) -> T:
        """Run ``fn(*args, job=job)`` in a worker thread once an inference slot is free (else
        503), within the request's deadline (else 504, nothing stored); a client that
        disconnects cancels it. The slot is held until the thread really ends, so the
        work running at once, and its memory, stay bounded even for abandoned requests."""
        loop = asyncio.get_running_loop()
        deadline = (started or loop.time()) + self.spec.request_timeout_s
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.spec.max_concurrent)
        wait = min(self.spec.queue_timeout_s, max(0.0, deadline - loop.time()))
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=wait)
        except TimeoutError:
            raise ApiError(503, "busy", f"all {self.spec.max_concurrent} inference slots stayed "
                                        f"busy for {wait:.3g} s; retry later") from None
        job = Job()
        slots = self._slots

        def done(f: asyncio.Future) -> None:
            slots.release()
            if not f.cancelled():
                f.exception()  # retrieved: an abandoned job's error is not "never retrieved"

        if request is not None and await request.is_disconnected():
            slots.release()
            raise ApiError(499, "client_closed", "the client closed the connection")
        work = asyncio.ensure_future(run_in_threadpool(fn, *args, job=job))
        work.add_done_callback(done)
        watch = asyncio.ensure_future(_watch(request, job)) if request is not None else None
        try:
            return await asyncio.wait_for(asyncio.shield(work),
                                          timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            if job.cancel("deadline"):
                log.warning("request over its %g s deadline: cancelled, nothing stored",
                            self.spec.request_timeout_s)
                raise ApiError(504, "deadline_exceeded", f"the work took longer than "
                               f"{self.spec.request_timeout_s:g} s; it was cancelled and "
                               "nothing was stored") from None
            return await work  # stored just before the deadline: answer with it
        except Cancelled as exc:
            raise ApiError(499, "client_closed", str(exc)) from None
        except asyncio.CancelledError:
            job.cancel("the request was cancelled")
            raise
        finally:
            if watch is not None:
                watch.cancel()

    def decode(self, data: bytes, filename: str) -> np.ndarray:
        """The upload as RGB, refused from its header when its sides are out of bounds."""
        size = None
        with contextlib.suppress(Exception):  # unreadable headers: read_image says why
            size = Image.open(io.BytesIO(data)).size
        if size is not None:
            width, height = size
            side, short = max(width, height), max(1, min(width, height))
            if side > self.spec.max_side or side / short > self.spec.max_aspect:
                raise ApiError(413, "too_large", f"{width}x{height} is out of bounds: at most "
                               f"{self.spec.max_side} px a side and an aspect ratio of "
                               f"{self.spec.max_aspect:g}")
        try:
            return read_image(data, name=filename or "upload", max_pixels=self.spec.max_pixels,
                              formats=self.spec.formats)
        except ImageReadError as exc:
            raise ApiError(READ_ERROR_STATUS.get(exc.kind, 422), exc.kind, str(exc)) from None

    def check_size(self, model: LoadedModel, image: np.ndarray) -> None:
        """A model without a fixed input size runs at the image's size: bound it."""
        pixels = image.shape[0] * image.shape[1]
        if model.predictor.input_size is None and pixels > self.spec.max_model_pixels:
            raise ApiError(413, "too_large", f"{image.shape[1]}x{image.shape[0]} is "
                           f"{pixels / 1e6:.1f} Mpx; {model.name} runs at each image's own "
                           f"size and this service takes at most "
                           f"{self.spec.max_model_pixels / 1e6:.1f} Mpx for it")

    def check_defects(self, model: LoadedModel, image: np.ndarray, filename: str, batch: str,
                      job: Job | None = None) -> Item:
        """Defect check of one strip: verdict, classes with area and RLE, overlay; stored."""
        from seglab.infer.overlay import overlay

        job = job or Job()
        job.check()
        pred = model.predictor.predict_batch([image])[0]
        job.check()
        classes = [{"name": name, "index": c + 1, "area": int(mask.sum()),
                    "area_fraction": round(float(mask.mean()), 6),
                    "probability": round(float(pred.class_probs[c]), 4),
                    "max_pixel_probability": round(float(pred.probs[c].max()), 4),
                    "rle": rle.encode(mask), "decided_by": why.split(": ", 1)[1]}
                   for c, (name, mask, why) in enumerate(zip(pred.class_names, pred.masks,
                                                             pred.decided_by, strict=True))]
        result = {"defective": bool(pred.classes_found),
                  "defect_score": round(pred.defect_score, 4),
                  "classes_found": pred.classes_found, "classes": classes}
        drawn = overlay(image, pred.masks, names=pred.class_names)
        job.check()
        return self.store.add(kind="defects", batch=batch, model=model.name, filename=filename,
                              image=image, verdict=result["defective"],
                              score=result["defect_score"], result=result,
                              files={"overlay": drawn}, commit=job.commit)

    def cut_out(self, model: LoadedModel, image: np.ndarray, filename: str, batch: str,
                background: tuple[int, int, int] | None = None, soft_edges: bool = False,
                job: Job | None = None) -> Item:
        """Background removal of one photo: cut-out, gate decision with reason; stored."""
        from seglab.cutout.remove import remove

        job = job or Job()
        job.check()
        cut = remove(image, model.predictor)
        job.check()
        cut_img = (cut.rgba(soft_edges) if background is None
                   else cut.on_colour(background, soft_edges))
        result = {**cut.decision.as_dict(), "threshold_gate": model.predictor.config.gate
                  .model_dump() if model.predictor.config.gate else None}
        return self.store.add(kind="cutout", batch=batch, model=model.name, filename=filename,
                              image=image, verdict=cut.decision.accepted,
                              score=cut.decision.confidence, result=result,
                              files={"mask": cut.mask * 255, "cutout": cut_img,
                                     "shown": cut_img if cut.decision.accepted else image},
                              commit=job.commit)

    async def process(self, task: str, model: LoadedModel, uploads: Sequence[UploadFile],
                      batch: str, request: Request | None = None, **options: Any
                      ) -> tuple[list[Item], list[dict]]:
        """Each upload on its own: one bad file is reported and the others go on. Each
        has its own deadline (``request_timeout_s``) from the moment it is read."""
        if not uploads:
            raise ApiError(400, "no_file", "no file was uploaded (form field 'file' or 'files')")
        if len(uploads) > self.spec.max_files:
            raise ApiError(413, "too_many_files", f"{len(uploads)} files in one request; the "
                                                  f"limit is {self.spec.max_files}")
        items, errors = [], []
        work = functools.partial(self.check_defects if task == "defects" else self.cut_out,
                                 **options)
        loop = asyncio.get_running_loop()
        for upload in uploads:
            name = _display_name(upload.filename)
            data = await upload.read()
            started = loop.time()
            try:
                # Decoding (and refusing bad files) needs no inference slot: a broken
                # upload is answered at once instead of queueing behind the model.
                image = await run_in_threadpool(self.decode, data, name)
                del data
                self.check_size(model, image)
                items.append(await self.run(work, model, image, name, batch, request=request,
                                            started=started))
            except ApiError as exc:
                errors.append({"filename": name, "status": exc.status, "code": exc.code,
                               "detail": exc.message})
        return items, errors


def _display_name(name: str | None) -> str:
    """The uploaded name as text for display: no folders, no control characters."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:200] or "upload"


def _load(path: Path) -> LoadedModel:
    predictor = load_model(path)
    return LoadedModel(predictor.config.display_name, path, predictor)

