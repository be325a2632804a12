"""The HTML pages (Jinja2), and error replies as HTML or JSON by what the
client accepts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from seglab.errors import SeglabError, describe
from seglab.serve.access import (
    Operator,
    Reviewer,
    check_csrf,
    identity,
    local_path,
    sign_in_redirect,
)
from seglab.serve.api import OPERATOR, VIEWER, Files, _get
from seglab.serve.service import ApiError, Service, log
from seglab.serve.store import KINDS, new_id

WEB = Path(__file__).parent / "web"


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
        if exc.status == 401 and _wants_html(request):
            return sign_in_redirect(request)
        return reply(request, exc.status, exc.code, exc.message)

    @app.exception_handler(SeglabError)
    async def seglab_error(request: Request, exc: SeglabError) -> Response:
        return reply(request, 400, "bad_request", str(exc))

    # Starlette's own exception, so unknown routes (404) and wrong methods (405), which
    # the router raises before FastAPI is involved, get the same {"detail", "code"}.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return reply(request, exc.status_code, codes.get(exc.status_code, "error"),
                     str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = describe(exc.errors())
        if _wants_html(request):
            return reply(request, 422, "invalid_request", problems)
        return JSONResponse({"detail": problems, "code": "invalid_request",
                             "errors": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:  # pragma: no cover
        log.exception("internal error on %s %s", request.method, request.url.path)
        return reply(request, 500, "internal", f"internal error ({type(exc).__name__}); the "
                                               "server logged the details")


def _pages(app: FastAPI, service: Service, templates: Jinja2Templates) -> None:
    store = service.store

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        who = getattr(request.state, "identity", None) or identity(request)
        return templates.TemplateResponse(request, name, {
            "models": list(service.models.values()), "identity": who,
            "csrf": who.csrf if who else "", **context})

    @app.get("/", dependencies=VIEWER, response_class=HTMLResponse,
             include_in_schema=False)
    def home(request: Request) -> HTMLResponse:
        return page(request, "index.html", stats=store.stats(),
                    model_info=[m.as_dict() for m in service.models.values()])

    @app.get("/defects", dependencies=OPERATOR, response_class=HTMLResponse,
             include_in_schema=False)
    def defects_page(request: Request) -> HTMLResponse:
        return page(request, "upload.html", task="defects", title="Defect check",
                    recent=store.items(kind="defects", limit=12))

    @app.get("/cutout", dependencies=OPERATOR, response_class=HTMLResponse,
             include_in_schema=False)
    def cutout_page(request: Request) -> HTMLResponse:
        return page(request, "upload.html", task="cutout", title="Background removal",
                    recent=store.items(kind="cutout", limit=12))

    @app.post("/defects", include_in_schema=False)
    async def defects_form(request: Request, files: Files, who: Operator,
                           model: Annotated[str, Form()] = "",
                           csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        check_csrf(who, csrf)
        return await _upload(request, "defects", files, model)

    @app.post("/cutout", include_in_schema=False)
    async def cutout_form(request: Request, files: Files, who: Operator,
                          model: Annotated[str, Form()] = "",
                          csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        check_csrf(who, csrf)
        return await _upload(request, "cutout", files, model)

    async def _upload(request: Request, task: str, files: list[UploadFile], model: str
                      ) -> Response:
        batch = new_id()
        items, errors = await service.process(task, service.model_for(task, model or None),
                                              files, batch, request)
        if not items:
            return page(request, "batch.html", task=task, items=[], errors=errors,
                        batch=batch)
        service.remember_errors(batch, errors)
        return RedirectResponse(request.app.url_path_for("batch_page", batch=batch),
                                status_code=303)

    @app.get("/batch/{batch}", dependencies=VIEWER, response_class=HTMLResponse,
             include_in_schema=False, name="batch_page")
    def batch_page(request: Request, batch: str) -> HTMLResponse:
        items = store.items(batch=batch, limit=1000)
        if not items:
            raise ApiError(404, "not_found", f"no batch {batch!r}")
        errors = service.batch_errors.get(batch, [])
        return page(request, "batch.html", task=items[0].kind, items=items[::-1],
                    errors=errors, batch=batch)

    @app.get("/items/{item_id}", dependencies=VIEWER, response_class=HTMLResponse,
             include_in_schema=False, name="item_page")
    def item_page(request: Request, item_id: str) -> HTMLResponse:
        item = _get(store, item_id)
        model = service.models.get(item.model)
        from seglab.infer.overlay import hex_colour

        legend = [{"colour": hex_colour(c["index"] - 1), **c}
                  for c in item.result.get("classes", [])]
        return page(request, "item.html", item=item, legend=legend, model=model)

    @app.get("/review", dependencies=VIEWER, response_class=HTMLResponse,
             include_in_schema=False)
    def review_page(request: Request, kind: str | None = None, show: str = "pending"
                    ) -> HTMLResponse:
        if kind not in (None, "", *KINDS):
            raise ApiError(400, "bad_kind", f"kind must be one of {', '.join(KINDS)}")
        items = store.items(kind=kind or None, unreviewed=show == "pending", limit=200)
        return page(request, "review.html", items=items, kind=kind or "", show=show)

    @app.post("/review/{item_id}", include_in_schema=False)
    def review_form(request: Request, item_id: str, verdict: Annotated[str, Form()],
                    who: Reviewer,
                    note: Annotated[str, Form()] = "", back: Annotated[str, Form()] = "/review",
                    csrf: Annotated[str, Form(max_length=200)] = "") -> RedirectResponse:
        check_csrf(who, csrf)
        if verdict not in ("true", "false"):
            raise ApiError(422, "invalid_request", "verdict must be true or false")
        _get(store, item_id)
        store.review(item_id, verdict == "true", reviewer=who.name, note=note)
        return RedirectResponse(local_path(back, "/review"), status_code=303)

    @app.get("/stats", dependencies=VIEWER, response_class=HTMLResponse,
             include_in_schema=False)
    def stats_page(request: Request) -> HTMLResponse:
        return page(request, "stats.html", stats=store.stats())

    @app.get("/charts/{name}.svg", dependencies=VIEWER, include_in_schema=False)
    async def chart(name: str) -> Response:
        from seglab.serve.charts import chart_svg

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

