"""The service's doors and locks: who is asking (API key, sign-in cookie or open mode),
what their role lets them do, and refusal of cross-site requests and forms without
their CSRF token.

Open mode (no sign-in; everyone is the local admin) is only for a service listening
on loopback, and every page says so. Everywhere else a request carries an API key
(``Authorization: Bearer sk_...`` or ``X-API-Key``) or the sign-in cookie. The JSON
API changes state only with a key: a cookie, which a browser sends by itself, reads
but never writes through it, and the pages' forms carry a per-session token.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from seglab.serve.auth import ROLES, SESSION_COOKIE, SESSION_HOURS, Accounts, AuthError, Identity
from seglab.serve.service import ApiError

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class CrossSiteGuard:
    """Refuses state-changing requests a browser sent from another site: a
    ``Sec-Fetch-Site: cross-site`` header, or an ``Origin`` other than this host.
    Clients that are not browsers send neither header and pass."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            site = headers.get("sec-fetch-site", "")
            origin = headers.get("origin")
            foreign = origin is not None and urlsplit(origin).netloc != headers.get("host")
            if site == "cross-site" or foreign:
                reply = JSONResponse({"detail": "cross-site request refused: state changes "
                                      "only come from this site's own pages or from API "
                                      "clients", "code": "cross_site"}, status_code=403)
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def identity(request: Request) -> Identity | None:
    """Who is asking; ``None`` when nobody signed in and no valid key came."""
    state = request.app.state
    if state.open_mode:
        return Identity("local", "admin", "open", state.open_csrf)
    accounts: Accounts = state.accounts
    key = _presented_key(request)
    if key is not None:
        return accounts.by_key(key)
    token = request.cookies.get(SESSION_COOKIE)
    return accounts.by_session(token) if token else None


def need(role: str) -> Callable[[Request], Identity]:
    """A dependency admitting ``role`` and above: 401 without identity, 403 below it."""
    if role not in ROLES:
        raise ValueError(role)

    def check(request: Request) -> Identity:
        who = identity(request)
        if who is None:
            raise ApiError(401, "sign_in_required", "sign in, or send an API key "
                           "(Authorization: Bearer sk_...)")
        if not who.can(role):
            raise ApiError(403, "forbidden", f"{who.name} is {who.role}; this needs {role}")
        if (request.method in UNSAFE and request.url.path.startswith("/api/")
                and who.via == "session"):
            raise ApiError(403, "key_required", "the JSON API changes nothing for a sign-in "
                           "cookie; send an API key")
        request.state.identity = who
        return who

    return check


Viewer = Annotated[Identity, Depends(need("viewer"))]
Operator = Annotated[Identity, Depends(need("operator"))]
Reviewer = Annotated[Identity, Depends(need("reviewer"))]
Admin = Annotated[Identity, Depends(need("admin"))]
"""The signed-in identity as a route parameter, admitted from that role up."""


def check_csrf(who: Identity, token: str) -> None:
    """A page's form must carry the token of the session that rendered it."""
    if not who.csrf or not hmac.compare_digest(token.encode(), who.csrf.encode()):
        raise ApiError(403, "csrf", "the form's CSRF token is missing or stale: reload the "
                       "page and submit again")


def local_path(target: str, default: str = "/") -> str:
    """Only paths on this site: a form field must never send a person off it."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) \
        else default


class UserIn(BaseModel):
    name: str = Field(max_length=64)
    role: str = Field(max_length=16)
    password: str | None = Field(default=None, max_length=200)


class KeyIn(BaseModel):
    user: str = Field(max_length=64)


def _access(app: FastAPI, accounts: Accounts, templates: Jinja2Templates) -> None:
    """Sign-in pages, and the admin API for users and keys."""
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        return templates.TemplateResponse(request, "login.html", {
            "next": local_path(next), "message": ""})

    @app.post("/login", include_in_schema=False)
    def login(request: Request, name: Annotated[str, Form(max_length=64)],
              password: Annotated[str, Form(max_length=200)],
              next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
        token = accounts.sign_in(name, password)
        if token is None:
            return templates.TemplateResponse(request, "login.html", {
                "next": local_path(next), "message": "Wrong name or password."},
                status_code=401)
        reply = RedirectResponse(local_path(next), status_code=303)
        reply.set_cookie(SESSION_COOKIE, token, max_age=SESSION_HOURS * 3600, httponly=True,
                         samesite="lax", secure=request.url.scheme == "https", path="/")
        return reply

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, who: Viewer,
               csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        check_csrf(who, csrf)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            accounts.sign_out(token)
        reply = RedirectResponse("/login", status_code=303)
        reply.delete_cookie(SESSION_COOKIE, path="/")
        return reply

    @app.get("/api/v1/users", tags=["access"])
    def users(_: Admin) -> list[dict[str, Any]]:
        return [{"name": u.name, "role": u.role, "disabled": u.disabled,
                 "signs_in": bool(u.password), "created": u.created.isoformat()}
                for u in accounts.users()]

    @app.post("/api/v1/users", tags=["access"], status_code=201)
    def add_user(body: UserIn, _: Admin) -> dict[str, Any]:
        try:
            user = accounts.add_user(body.name, body.role, body.password)
        except AuthError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        return {"name": user.name, "role": user.role}

    @app.get("/api/v1/keys", tags=["access"])
    def keys(_: Admin) -> list[dict[str, Any]]:
        return [{"id": k.id, "user": k.user, "created": k.created.isoformat(),
                 "revoked": k.revoked.isoformat() if k.revoked else None,
                 "last_used": k.last_used.isoformat() if k.last_used else None}
                for k in accounts.api_keys()]

    @app.post("/api/v1/keys", tags=["access"], status_code=201)
    def create_key(body: KeyIn, _: Admin) -> dict[str, str]:
        try:
            key_id, key = accounts.create_key(body.user)
        except AuthError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        return {"id": key_id, "user": body.user, "key": key}

    @app.delete("/api/v1/keys/{key_id}", tags=["access"])
    def revoke_key(key_id: str, _: Admin) -> dict[str, str]:
        try:
            accounts.revoke(key_id[:40])
        except AuthError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        return {"id": key_id[:40], "revoked": "yes"}


def sign_in_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse("/login?next=" + quote(request.url.path, safe="/"),
                            status_code=303)


def new_open_token() -> str:
    return secrets.token_urlsafe(24)
