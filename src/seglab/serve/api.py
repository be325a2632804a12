"""The JSON API: ``/api/v1/...`` predictions, cut-outs, items and reviews.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from seglab import __version__
from seglab.serve.access import Reviewer, need
from seglab.serve.service import ApiError, Service
from seglab.serve.store import KINDS, Item, Store, new_id


class ReviewIn(BaseModel):
    verdict: bool
    """Defect check: defective. Cut-out: show the cut-out (accepted)."""
    note: str = ""
    """The reviewer recorded is the identity of the key that sent the decision."""


def item_json(item: Item, request: Request) -> dict[str, Any]:
    files = ("original", "overlay") if item.kind == "defects" else (
        "original", "mask", "cutout", "shown")
    # Relative URLs: the Host header is the client's to forge, so no link is built from it.
    urls = {f"{f}_url": request.app.url_path_for("item_file", item_id=item.id, name=f"{f}.png")
            for f in files}
    out = {**item.as_dict(), **urls, "page_url": str(request.app.url_path_for("item_page",
                                                                     item_id=item.id))}
    result = out.pop("result")
    return {**out, **result}


VIEWER = [Depends(need("viewer"))]
OPERATOR = [Depends(need("operator"))]
"""Route guards by role (``serve.access``): reading needs a viewer, uploading an operator."""

Files = Annotated[list[UploadFile], File(description="Image files (JPEG, PNG, ...)")]


def _api(app: FastAPI, service: Service) -> None:
    store = service.store

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness and readiness: models loaded and the database answering."""
        store.ping()
        return {"status": "ok", "version": __version__, "models": list(service.models)}

    @app.get("/api/v1/models", dependencies=VIEWER, tags=["service"])
    def models() -> list[dict[str, Any]]:
        """Loaded models with the measured metrics from their model cards."""
        return [m.as_dict() for m in service.models.values()]

    @app.post("/api/v1/defects", dependencies=OPERATOR, tags=["defects"])
    async def defects(request: Request, file: Annotated[UploadFile, File()],
                      model: str | None = None) -> dict[str, Any]:
        """One strip -> defective yes/no with score, classes with area and RLE, overlay link."""
        items, errors = await service.process("defects", service.model_for("defects", model),
                                              [file], new_id(), request)
        if errors:
            e = errors[0]
            raise ApiError(e["status"], e["code"], e["detail"])
        return item_json(items[0], request)

    @app.post("/api/v1/defects/batch", dependencies=OPERATOR, tags=["defects"])
    async def defects_batch(request: Request, files: Files, model: str | None = None
                            ) -> dict[str, Any]:
        """Several strips; each bad file is listed in ``errors`` and the rest are processed."""
        batch = new_id()
        items, errors = await service.process("defects", service.model_for("defects", model),
                                              files, batch, request)
        return {"batch": batch, "results": [item_json(i, request) for i in items],
                "errors": errors}

    @app.post("/api/v1/cutout", dependencies=OPERATOR, tags=["cutout"], response_model=None)
    async def cutout(request: Request, file: Annotated[UploadFile, File()],
                     model: str | None = None,
                     format: Annotated[str, Query(pattern="^(json|png)$")] = "json",
                     background: str | None = None, soft_edges: bool = False
                     ) -> dict[str, Any] | Response:
        """One photo -> accepted, confidence, area fraction, reason; ``format=png`` returns
        the image a person is shown (the RGBA cut-out, or the original when rejected)."""
        from seglab.cutout.remove import parse_colour

        items, errors = await service.process(
            "cutout", service.model_for("cutout", model), [file], new_id(), request,
            background=parse_colour(background), soft_edges=soft_edges)
        if errors:
            e = errors[0]
            raise ApiError(e["status"], e["code"], e["detail"])
        item = items[0]
        if format == "png":
            return _image(store, item.id, "shown", headers={
                "X-Seglab-Accepted": str(item.verdict).lower(),
                "X-Seglab-Confidence": f"{item.score:.5f}",
                "X-Seglab-Reason": item.result.get("reason", ""), "X-Seglab-Item": item.id})
        return item_json(item, request)

    @app.post("/api/v1/cutout/batch", dependencies=OPERATOR, tags=["cutout"])
    async def cutout_batch(request: Request, files: Files, model: str | None = None,
                           background: str | None = None, soft_edges: bool = False
                           ) -> dict[str, Any]:
        """Several photos; each bad file is listed in ``errors`` and the rest are processed."""
        from seglab.cutout.remove import parse_colour

        batch = new_id()
        items, errors = await service.process(
            "cutout", service.model_for("cutout", model), files, batch, request,
            background=parse_colour(background), soft_edges=soft_edges)
        return {"batch": batch, "results": [item_json(i, request) for i in items],
                "errors": errors}

    @app.get("/api/v1/items", dependencies=VIEWER, tags=["review"])
    def items(request: Request, kind: str | None = None, batch: str | None = None,
              unreviewed: bool = False,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              offset: Annotated[int, Query(ge=0, le=2**62)] = 0) -> list[dict[str, Any]]:
        """Processed images, newest first."""
        if kind is not None and kind not in KINDS:
            raise ApiError(400, "bad_kind", f"kind must be one of {', '.join(KINDS)}")
        return [item_json(i, request) for i in store.items(
            kind=kind, batch=batch, unreviewed=unreviewed, limit=limit, offset=offset)]

    @app.get("/api/v1/items/{item_id}", dependencies=VIEWER, tags=["review"])
    def item(request: Request, item_id: str) -> dict[str, Any]:
        return item_json(_get(store, item_id), request)

    @app.post("/api/v1/items/{item_id}/review", tags=["review"])
    def review(request: Request, item_id: str, body: ReviewIn,
               who: Reviewer) -> dict[str, Any]:
        """A person's decision: confirm the model's verdict or override it. Recorded
        with the key's user and the time, beside every earlier decision (none is
        overwritten)."""
        _get(store, item_id)
        return item_json(store.review(item_id, body.verdict, reviewer=who.name,
                                      note=body.note), request)

    @app.get("/api/v1/stats", dependencies=VIEWER, tags=["review"])
    def stats() -> dict[str, Any]:
        """Counts and distributions over everything processed."""
        return store.stats()

    @app.get("/files/{item_id}/{name}", dependencies=VIEWER, name="item_file", tags=["files"])
    def item_file(item_id: str, name: str) -> FileResponse:
        """An item's image; only seglab's own file names exist here."""
        try:
            return _image(store, item_id, name.removesuffix(".png"),
                          headers={"Cache-Control": "private, max-age=3600"})
        except KeyError:
            raise ApiError(404, "not_found",
                           f"no file {_short(name)} for item {_short(item_id)}") from None


def _image(store: Store, item_id: str, kind: str, headers: dict[str, str]) -> Response:
    """An item's PNG: sent from disk when the store is a folder, read through fsspec from
    an object store. ``KeyError`` when there is no such file."""
    path = store.files.local_path(item_id, kind)
    if path is not None:
        if not path.is_file():
            raise KeyError(f"{item_id}/{kind}")
        return FileResponse(path, media_type="image/png", headers=headers)
    return Response(store.files.read(item_id, kind), media_type="image/png", headers=headers)


def _get(store: Store, item_id: str) -> Item:
    try:
        return store.get(item_id)
    except KeyError:
        raise ApiError(404, "not_found", f"no item {_short(item_id)}") from None



def _short(text: str, limit: int = 80) -> str:
    """A client-chosen value as an error message quotes it: at most ``limit`` characters,
    so a 100 KB id is not sent back in full."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
