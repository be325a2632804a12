"""Upload limits enforced while the body streams in: a huge or endless upload is
refused with 413 before it is buffered.
"""
from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
        started = exceeded = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            # The framework may catch the cut-off itself (FastAPI turns any error while
            # parsing a form into 400): once the limit is passed, its answer is replaced
            # by the 413 the client is owed.
            nonlocal started, refused
            if exceeded:
                if not refused and message["type"] == "http.response.start":
                    refused = True
                    await self._refuse(send, None)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started and not refused:
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

