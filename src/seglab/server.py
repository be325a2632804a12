"""The web service: a JSON API and pages for inspectors and reviewers.

``create_app(models, data_dir)`` builds the FastAPI application; ``serve`` runs it
with uvicorn. Requests flow one way: upload -> checks (size, type by content,
pixels) -> a bounded pool of inference slots -> post-processing -> files in the
data folder and a row in the database -> JSON or a page. Every user mistake is a
JSON error with a 4xx status; the server keeps serving after any of them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seglab import __version__, rle
from seglab.errors import ImageReadError, SeglabError
from seglab.io import read_image
from seglab.predict import Predictor, load_model
from seglab.recipes import ServerSpec
from seglab.store import KINDS, Item, Store, new_id

log = logging.getLogger("seglab.server")
WEB = Path(__file__).parent / "web"
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
        from seglab.models import count_parameters

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


class ReviewIn(BaseModel):
    verdict: bool
    """Defect check: defective. Cut-out: show the cut-out (accepted)."""
    reviewer: str = ""
    note: str = ""


class UploadLimit:
    """Refuse request bodies over the limit before reading them (pure ASGI middleware).

    A declared ``Content-Length`` over the limit is answered 413 at once; a body
    without one (chunked) is counted as it streams and cut off at the limit.
    Starlette has no such limit of its own, so it is written here.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, int(declared) if declared.isdigit() else None)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, None)

    async def _refuse(self, send: Send, size: int | None) -> None:
        limit = self.max_bytes / 1e6
        what = f"{size / 1e6:.1f} MB" if size is not None else "the request body"
        response = JSONResponse({"detail": f"upload too large: {what} exceeds the "
                                           f"{limit:g} MB limit", "code": "too_large"},
                                status_code=413, headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:  # pragma: no cover - JSONResponse never reads
    return {"type": "http.disconnect"}


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
        from seglab.report import overlay

        pred = model.predictor.predict_batch([image])[0]
        classes = [{"name": name, "index": c + 1, "area": int(mask.sum()),
                    "area_fraction": round(float(mask.mean()), 6),
                    "probability": round(float(pred.class_probs[c]), 4),
                    "max_pixel_probability": round(float(pred.probs[c].max()), 4),
                    "rle": rle.encode(mask)}
                   for c, (name, mask) in enumerate(zip(pred.class_names, pred.masks,
                                                        strict=True))]
        result = {"defective": bool(pred.classes_found),
                  "defect_score": round(pred.defect_score, 4),
                  "classes_found": pred.classes_found, "classes": classes}
        return self.store.add(kind="defects", batch=batch, model=model.name, filename=filename,
                              image=image, verdict=result["defective"],
                              score=result["defect_score"], result=result,
                              files={"overlay": overlay(image, pred.masks)})

    def cut_out(self, model: LoadedModel, image: np.ndarray, filename: str, batch: str,
                background: tuple[int, int, int] | None = None, soft_edges: bool = False
                ) -> Item:
        """Background removal of one photo: cut-out, gate decision with reason; stored."""
        from seglab.cutout import remove

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


def item_json(item: Item, request: Request) -> dict[str, Any]:
    files = ("original", "overlay") if item.kind == "defects" else (
        "original", "mask", "cutout", "shown")
    urls = {f"{f}_url": str(request.url_for("item_file", item_id=item.id, name=f"{f}.png"))
            for f in files}
    out = {**item.as_dict(), **urls, "page_url": str(request.url_for("item_page",
                                                                     item_id=item.id))}
    result = out.pop("result")
    return {**out, **result}


def create_app(models: Sequence[str | os.PathLike[str]] | Sequence[LoadedModel],
               data_dir: str | os.PathLike[str] = "seglab-data", *, db_url: str | None = None,
               spec: ServerSpec | None = None) -> FastAPI:
    """The FastAPI application serving ``models`` (model folders or loaded models)."""
    spec = spec or ServerSpec()
    loaded = [m if isinstance(m, LoadedModel) else _load(Path(m)) for m in models]
    names = [m.name for m in loaded]
    for i, m in enumerate(loaded):  # two folders of the same recipe get distinct names
        if names.count(m.name) > 1:
            m.name = f"{m.name}-{i + 1}"
    service = Service(loaded, Store(data_dir, db_url), spec)
    app = FastAPI(title="seglab", version=__version__,
                  description="U-Net segmentation: steel defect check and jewellery "
                              "background removal.")
    app.state.service = service
    app.add_middleware(UploadLimit, max_bytes=int(spec.max_upload_mb * 1e6))
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
    templates = Jinja2Templates(directory=WEB / "templates")
    templates.env.globals.update(version=__version__)
    _errors(app, templates)
    _api(app, service)
    _pages(app, service, templates)
    return app


def _load(path: Path) -> LoadedModel:
    predictor = load_model(path)
    return LoadedModel(predictor.config.display_name, path, predictor)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith(("/api/", "/healthz", "/files/")) and (
        "text/html" in request.headers.get("accept", ""))


def _errors(app: FastAPI, templates: Jinja2Templates) -> None:
    def reply(request: Request, status: int, code: str, message: str) -> Response:
        if _wants_html(request):
            return templates.TemplateResponse(request, "error.html", {
                "status": status, "message": message}, status_code=status)
        return JSONResponse({"detail": message, "code": code}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return reply(request, exc.status, exc.code, exc.message)

    @app.exception_handler(SeglabError)
    async def seglab_error(request: Request, exc: SeglabError) -> Response:
        return reply(request, 400, "bad_request", str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return reply(request, exc.status_code, codes.get(exc.status_code, "error"),
                     str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        if _wants_html(request):
            return reply(request, 422, "invalid_request", problems)
        return JSONResponse({"detail": problems, "code": "invalid_request",
                             "errors": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:  # pragma: no cover
        log.exception("internal error on %s %s", request.method, request.url.path)
        return reply(request, 500, "internal", f"internal error ({type(exc).__name__}); the "
                                               "server logged the details")


Files = Annotated[list[UploadFile], File(description="Image files (JPEG, PNG, ...)")]


def _api(app: FastAPI, service: Service) -> None:
    store = service.store

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness and readiness: models loaded and the database answering."""
        store.ping()
        return {"status": "ok", "version": __version__, "models": list(service.models)}

    @app.get("/api/v1/models", tags=["service"])
    def models() -> list[dict[str, Any]]:
        """Loaded models with the measured metrics from their model cards."""
        return [m.as_dict() for m in service.models.values()]

    @app.post("/api/v1/defects", tags=["defects"])
    async def defects(request: Request, file: Annotated[UploadFile, File()],
                      model: str | None = None) -> dict[str, Any]:
        """One strip -> defective yes/no with score, classes with area and RLE, overlay link."""
        items, errors = await service.process("defects", service.model_for("defects", model),
                                              [file], new_id())
        if errors:
            e = errors[0]
            raise ApiError(e["status"], e["code"], e["detail"])
        return item_json(items[0], request)

    @app.post("/api/v1/defects/batch", tags=["defects"])
    async def defects_batch(request: Request, files: Files, model: str | None = None
                            ) -> dict[str, Any]:
        """Several strips; each bad file is listed in ``errors`` and the rest are processed."""
        batch = new_id()
        items, errors = await service.process("defects", service.model_for("defects", model),
                                              files, batch)
        return {"batch": batch, "results": [item_json(i, request) for i in items],
                "errors": errors}

    @app.post("/api/v1/cutout", tags=["cutout"], response_model=None)
    async def cutout(request: Request, file: Annotated[UploadFile, File()],
                     model: str | None = None,
                     format: Annotated[str, Query(pattern="^(json|png)$")] = "json",
                     background: str | None = None, soft_edges: bool = False
                     ) -> dict[str, Any] | Response:
        """One photo -> accepted, confidence, area fraction, reason; ``format=png`` returns
        the image a person is shown (the RGBA cut-out, or the original when rejected)."""
        from seglab.cutout import parse_colour

        items, errors = await service.process(
            "cutout", service.model_for("cutout", model), [file], new_id(),
            background=parse_colour(background), soft_edges=soft_edges)
        if errors:
            e = errors[0]
            raise ApiError(e["status"], e["code"], e["detail"])
        item = items[0]
        if format == "png":
            return FileResponse(store.file_path(item.id, "shown"), media_type="image/png",
                                headers={"X-Seglab-Accepted": str(item.verdict).lower(),
                                         "X-Seglab-Confidence": f"{item.score:.5f}",
                                         "X-Seglab-Reason": item.result.get("reason", ""),
                                         "X-Seglab-Item": item.id})
        return item_json(item, request)

    @app.post("/api/v1/cutout/batch", tags=["cutout"])
    async def cutout_batch(request: Request, files: Files, model: str | None = None,
                           background: str | None = None, soft_edges: bool = False
                           ) -> dict[str, Any]:
        """Several photos; each bad file is listed in ``errors`` and the rest are processed."""
        from seglab.cutout import parse_colour

        batch = new_id()
        items, errors = await service.process(
            "cutout", service.model_for("cutout", model), files, batch,
            background=parse_colour(background), soft_edges=soft_edges)
        return {"batch": batch, "results": [item_json(i, request) for i in items],
                "errors": errors}

    @app.get("/api/v1/items", tags=["review"])
    def items(request: Request, kind: str | None = None, batch: str | None = None,
              unreviewed: bool = False,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              offset: Annotated[int, Query(ge=0)] = 0) -> list[dict[str, Any]]:
        """Processed images, newest first."""
        if kind is not None and kind not in KINDS:
            raise ApiError(400, "bad_kind", f"kind must be one of {', '.join(KINDS)}")
        return [item_json(i, request) for i in store.items(
            kind=kind, batch=batch, unreviewed=unreviewed, limit=limit, offset=offset)]

    @app.get("/api/v1/items/{item_id}", tags=["review"])
    def item(request: Request, item_id: str) -> dict[str, Any]:
        return item_json(_get(store, item_id), request)

    @app.post("/api/v1/items/{item_id}/review", tags=["review"])
    def review(request: Request, item_id: str, body: ReviewIn) -> dict[str, Any]:
        """A person's decision: confirm the model's verdict or override it."""
        _get(store, item_id)
        return item_json(store.review(item_id, body.verdict, reviewer=body.reviewer,
                                      note=body.note), request)

    @app.get("/api/v1/stats", tags=["review"])
    def stats() -> dict[str, Any]:
        """Counts and distributions over everything processed."""
        return store.stats()

    @app.get("/files/{item_id}/{name}", name="item_file", tags=["files"])
    def item_file(item_id: str, name: str) -> FileResponse:
        """An item's image; only seglab's own file names exist here."""
        kind = name.removesuffix(".png")
        try:
            path = store.file_path(item_id, kind)
        except KeyError:
            raise ApiError(404, "not_found", f"no file {name!r} for item {item_id!r}") from None
        if not path.is_file():
            raise ApiError(404, "not_found", f"no file {name!r} for item {item_id!r}")
        return FileResponse(path, media_type="image/png",
                            headers={"Cache-Control": "private, max-age=3600"})


def _get(store: Store, item_id: str) -> Item:
    try:
        return store.get(item_id)
    except KeyError:
        raise ApiError(404, "not_found", f"no item {item_id!r}") from None


def _pages(app: FastAPI, service: Service, templates: Jinja2Templates) -> None:
    store = service.store

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {
            "models": list(service.models.values()), **context})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request) -> HTMLResponse:
        return page(request, "index.html", stats=store.stats(),
                    model_info=[m.as_dict() for m in service.models.values()])

    @app.get("/defects", response_class=HTMLResponse, include_in_schema=False)
    def defects_page(request: Request) -> HTMLResponse:
        return page(request, "upload.html", task="defects", title="Defect check",
                    recent=store.items(kind="defects", limit=12))

    @app.get("/cutout", response_class=HTMLResponse, include_in_schema=False)
    def cutout_page(request: Request) -> HTMLResponse:
        return page(request, "upload.html", task="cutout", title="Background removal",
                    recent=store.items(kind="cutout", limit=12))

    @app.post("/defects", include_in_schema=False)
    async def defects_form(request: Request, files: Files, model: Annotated[str, Form()] = ""
                           ) -> Response:
        return await _upload(request, "defects", files, model)

    @app.post("/cutout", include_in_schema=False)
    async def cutout_form(request: Request, files: Files, model: Annotated[str, Form()] = ""
                          ) -> Response:
        return await _upload(request, "cutout", files, model)

    async def _upload(request: Request, task: str, files: list[UploadFile], model: str
                      ) -> Response:
        batch = new_id()
        items, errors = await service.process(task, service.model_for(task, model or None),
                                              files, batch)
        if not items:
            return page(request, "batch.html", task=task, items=[], errors=errors,
                        batch=batch)
        service.remember_errors(batch, errors)
        return RedirectResponse(str(request.url_for("batch_page", batch=batch)),
                                status_code=303)

    @app.get("/batch/{batch}", response_class=HTMLResponse, include_in_schema=False,
             name="batch_page")
    def batch_page(request: Request, batch: str) -> HTMLResponse:
        items = store.items(batch=batch, limit=1000)
        if not items:
            raise ApiError(404, "not_found", f"no batch {batch!r}")
        errors = service.batch_errors.get(batch, [])
        return page(request, "batch.html", task=items[0].kind, items=items[::-1],
                    errors=errors, batch=batch)

    @app.get("/items/{item_id}", response_class=HTMLResponse, include_in_schema=False,
             name="item_page")
    def item_page(request: Request, item_id: str) -> HTMLResponse:
        item = _get(store, item_id)
        model = service.models.get(item.model)
        from seglab.report import hex_colour

        legend = [{"colour": hex_colour(c["index"] - 1), **c}
                  for c in item.result.get("classes", [])]
        return page(request, "item.html", item=item, legend=legend, model=model)

    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def review_page(request: Request, kind: str | None = None, show: str = "pending"
                    ) -> HTMLResponse:
        if kind not in (None, "", *KINDS):
            raise ApiError(400, "bad_kind", f"kind must be one of {', '.join(KINDS)}")
        items = store.items(kind=kind or None, unreviewed=show == "pending", limit=200)
        return page(request, "review.html", items=items, kind=kind or "", show=show)

    @app.post("/review/{item_id}", include_in_schema=False)
    def review_form(request: Request, item_id: str, verdict: Annotated[str, Form()],
                    note: Annotated[str, Form()] = "", back: Annotated[str, Form()] = "/review"
                    ) -> RedirectResponse:
        if verdict not in ("true", "false"):
            raise ApiError(422, "invalid_request", "verdict must be true or false")
        _get(store, item_id)
        store.review(item_id, verdict == "true", reviewer="web", note=note)
        # Only local paths: a form field must never redirect a reviewer off the site.
        target = back if back.startswith("/") and not back.startswith("//") else "/review"
        return RedirectResponse(target, status_code=303)

    @app.get("/stats", response_class=HTMLResponse, include_in_schema=False)
    def stats_page(request: Request) -> HTMLResponse:
        return page(request, "stats.html", stats=store.stats())

    @app.get("/charts/{name}.svg", include_in_schema=False)
    async def chart(name: str) -> Response:
        from seglab.report import chart_svg

        stats = store.stats()
        charts = {
            "defects-per-class": lambda: chart_svg(
                "bars", stats["defects_per_class"], title="Defective strips per class"),
            "defect-scores": lambda: chart_svg(
                "hist", stats["defect_scores"], title="Classifier defect score",
                xlabel="score"),
            "confidence": lambda: chart_svg(
                "hist", stats["confidences"], title="Cut-out confidence", xlabel="confidence"),
            "area": lambda: chart_svg(
                "hist", stats["area_fractions"], title="Cut-out mask area",
                xlabel="fraction of the image"),
        }
        if name not in charts:
            raise ApiError(404, "not_found", f"no chart {name!r}")
        svg = await run_in_threadpool(charts[name])
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


def serve(models: Sequence[str | os.PathLike[str]], *, host: str = "127.0.0.1",
          port: int = 8000, data_dir: str | os.PathLike[str] = "seglab-data",
          db_url: str | None = None, spec: ServerSpec | None = None) -> None:
    """Load the models and serve until interrupted."""
    import torch
    import uvicorn

    spec = spec or ServerSpec()
    # Each inference slot gets its share of the cores instead of all slots fighting over all.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.max_concurrent))
    app = create_app(models, data_dir, db_url=db_url, spec=spec)
    uvicorn.run(app, host=host, port=port, log_level="info")


__all__ = ["ApiError", "LoadedModel", "Service", "create_app", "serve"]
