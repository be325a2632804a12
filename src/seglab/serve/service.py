"""The service behind the API and the pages: loaded models, inference slots,
the store, and the errors both doors report.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import UploadFile
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

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread once an inference slot is free (else 503)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.spec.max_concurrent)
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.spec.queue_timeout_s)
        except TimeoutError:
            raise ApiError(503, "busy", f"all {self.spec.max_concurrent} inference slots stayed "
                                        f"busy for {self.spec.queue_timeout_s:g} s; retry later"
                           ) from None
        try:
            return await run_in_threadpool(fn, *args)
        finally:
            self._slots.release()

    def decode(self, data: bytes, filename: str) -> np.ndarray:
        try:
            return read_image(data, name=filename or "upload", max_pixels=self.spec.max_pixels,
                              formats=self.spec.formats)
        except ImageReadError as exc:
            raise ApiError(READ_ERROR_STATUS.get(exc.kind, 422), exc.kind, str(exc)) from None

    def check_defects(self, model: LoadedModel, image: np.ndarray, filename: str, batch: str
                      ) -> Item:
        """Defect check of one strip: verdict, classes with area and RLE, overlay; stored."""
        from seglab.infer.overlay import overlay

        pred = model.predictor.predict_batch([image])[0]
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
        return self.store.add(kind="defects", batch=batch, model=model.name, filename=filename,
                              image=image, verdict=result["defective"],
                              score=result["defect_score"], result=result,
                              files={"overlay": overlay(image, pred.masks, names=pred.class_names)})

    def cut_out(self, model: LoadedModel, image: np.ndarray, filename: str, batch: str,
                background: tuple[int, int, int] | None = None, soft_edges: bool = False
                ) -> Item:
        """Background removal of one photo: cut-out, gate decision with reason; stored."""
        from seglab.cutout.remove import remove

        cut = remove(image, model.predictor)
        cut_img = (cut.rgba(soft_edges) if background is None
                   else cut.on_colour(background, soft_edges))
        result = {**cut.decision.as_dict(), "threshold_gate": model.predictor.config.gate
                  .model_dump() if model.predictor.config.gate else None}
        return self.store.add(kind="cutout", batch=batch, model=model.name, filename=filename,
                              image=image, verdict=cut.decision.accepted,
                              score=cut.decision.confidence, result=result,
                              files={"mask": cut.mask * 255, "cutout": cut_img,
                                     "shown": cut_img if cut.decision.accepted else image})

    async def process(self, task: str, model: LoadedModel, uploads: Sequence[UploadFile],
                      batch: str, **options: Any) -> tuple[list[Item], list[dict]]:
        """Each upload on its own: one bad file is reported and the others go on."""
        if not uploads:
            raise ApiError(400, "no_file", "no file was uploaded (form field 'file' or 'files')")
        if len(uploads) > self.spec.max_files:
            raise ApiError(413, "too_many_files", f"{len(uploads)} files in one request; the "
                                                  f"limit is {self.spec.max_files}")
        items, errors = [], []
        work = functools.partial(self.check_defects if task == "defects" else self.cut_out,
                                 **options)
        for upload in uploads:
            name = _display_name(upload.filename)
            data = await upload.read()
            try:
                # Decoding (and refusing bad files) needs no inference slot: a broken
                # upload is answered at once instead of queueing behind the model.
                image = await run_in_threadpool(self.decode, data, name)
                items.append(await self.run(work, model, image, name, batch))
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

