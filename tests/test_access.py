"""Who may do what on the web service: roles on every endpoint, sign-in with CSRF,
API keys stored hashed, cross-site posts refused, open mode only on loopback."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from test_server import _csrf, _planted, _png, _strip, folders  # noqa: F401 (fixture)
from typer.testing import CliRunner

from seglab.cli import app as cli
from seglab.errors import RecipeError
from seglab.serve.app import create_app
from seglab.serve.auth import ROLES
from seglab.serve.config import ServerSpec

PASSWORD = "correct horse 9"


@pytest.fixture
def secured(folders, tmp_path):  # noqa: F811
    app = create_app(_planted(folders), tmp_path / "data", spec=ServerSpec(auth="on"))
    accounts = app.state.accounts
    keys = {}
    for role in ROLES:
        accounts.add_user(f"{role}-1", role, PASSWORD)
        keys[role] = accounts.create_key(f"{role}-1")[1]
    with TestClient(app) as c:
        item = c.post("/api/v1/defects", headers=_auth(keys["operator"]),
                      files={"file": ("s.png", _png(_strip()), "image/png")}).json()["id"]
        yield c, keys, item, app


def _auth(key):
    return {"authorization": f"Bearer {key}"}


def _endpoints(item):
    upload = {"files": {"file": ("s.png", _png(_strip()), "image/png")}}
    return [
        ("get", "/api/v1/models", "viewer", {}),
        ("get", "/api/v1/items", "viewer", {}),
        ("get", f"/api/v1/items/{item}", "viewer", {}),
        ("get", "/api/v1/stats", "viewer", {}),
        ("get", f"/files/{item}/original.png", "viewer", {}),
        ("get", "/", "viewer", {}),
        ("get", "/review", "viewer", {}),
        ("get", "/charts/confidence.svg", "viewer", {}),
        ("get", "/defects", "operator", {}),
        ("post", "/api/v1/defects", "operator", upload),
        ("post", "/api/v1/cutout", "operator", upload),
        ("post", f"/api/v1/items/{item}/review", "reviewer", {"json": {"verdict": True}}),
        ("get", "/api/v1/users", "admin", {}),
        ("get", "/api/v1/keys", "admin", {}),
        ("post", "/api/v1/keys", "admin", {"json": {"user": "viewer-1"}}),
    ]


def test_each_role_is_allowed_and_refused_on_each_endpoint(secured):
    c, keys, item, _ = secured
    assert c.get("/healthz").status_code == 200  # liveness stays open
    for method, path, needed, kwargs in _endpoints(item):
        anonymous = getattr(c, method)(path, follow_redirects=False, **kwargs)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.json()["code"] == "sign_in_required"
        for role in ROLES:
            r = getattr(c, method)(path, headers=_auth(keys[role]), follow_redirects=False,
                                   **kwargs)
            if ROLES.index(role) < ROLES.index(needed):
                assert r.status_code == 403 and r.json()["code"] == "forbidden", (path, role)
            else:
                assert r.status_code in (200, 201), (path, role, r.status_code, r.text[:200])
    # A person's browser without a session is sent to the sign-in page.
    page = c.get("/review", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/review"
    bad = c.get("/api/v1/items", headers=_auth("sk_000000000000_forged"))
    assert bad.status_code == 401


def test_a_review_records_the_signed_in_identity_and_keeps_every_decision(secured):
    c, keys, item, app = secured
    r = c.post(f"/api/v1/items/{item}/review", headers=_auth(keys["reviewer"]),
               json={"verdict": True, "reviewer": "chief-inspector", "note": "ok"})
    assert r.status_code == 200 and r.json()["review"]["reviewer"] == "reviewer-1"
    r = c.post(f"/api/v1/items/{item}/review", headers=_auth(keys["admin"]),
               json={"verdict": False})
    assert r.json()["review"]["reviewer"] == "admin-1"
    trail = app.state.service.store.get(item).reviews
    assert [(x.reviewer, x.verdict) for x in trail] == [("reviewer-1", True), ("admin-1", False)]
    assert all(x.created is not None for x in trail)


def test_sign_in_sets_a_safe_cookie_and_forms_need_their_csrf_token(secured):
    c, _, item, _ = secured
    wrong = c.post("/login", data={"name": "reviewer-1", "password": "nope-nope"})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    r = c.post("/login", data={"name": "reviewer-1", "password": PASSWORD, "next": "//evil"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    page = c.get(f"/items/{item}")
    assert page.status_code == 200 and "reviewer-1 (reviewer)" in page.text
    assert "Development mode" not in page.text
    token = _csrf(c, f"/items/{item}")
    refused = c.post(f"/review/{item}", data={"verdict": "true"}, follow_redirects=False)
    assert refused.status_code == 403 and refused.json()["code"] == "csrf"
    stale = c.post(f"/review/{item}", data={"verdict": "true", "csrf": "x" * 32})
    assert stale.status_code == 403
    ok = c.post(f"/review/{item}", data={"verdict": "true", "csrf": token},
                follow_redirects=False)
    assert ok.status_code == 303
    assert c.get(f"/api/v1/items/{item}").json()["review"]["reviewer"] == "reviewer-1"
    # The cookie reads the JSON API but never writes through it (a browser sends it alone).
    api = c.post(f"/api/v1/items/{item}/review", json={"verdict": False})
    assert api.status_code == 403 and api.json()["code"] == "key_required"
    # An operator's session may not decide.
    c.post("/logout", data={"csrf": token})
    assert c.get("/api/v1/items").status_code == 401  # the session ended server-side
    c.post("/login", data={"name": "operator-1", "password": PASSWORD})
    assert c.post(f"/review/{item}", data={"verdict": "true", "csrf": _csrf(c)}
                  ).status_code == 403


def test_cross_site_posts_are_refused_even_in_open_mode(folders, tmp_path):  # noqa: F811
    with TestClient(create_app(_planted(folders), tmp_path / "d")) as c:
        assert "Development mode: open" in c.get("/").text
        item = c.post("/api/v1/defects", files={"file": ("s.png", _png(_strip()))}).json()["id"]
        token = _csrf(c, f"/items/{item}")
        form = {"verdict": "true", "csrf": token}
        for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"},
                        {"origin": "null"}):
            r = c.post(f"/review/{item}", data=form, headers=headers, follow_redirects=False)
            assert r.status_code == 403 and r.json()["code"] == "cross_site", headers
        upload = c.post("/api/v1/defects", files={"file": ("s.png", _png(_strip()))},
                        headers={"origin": "https://evil.example"})
        assert upload.status_code == 403
        assert c.get(f"/api/v1/items/{item}").json()["review"] is None  # nothing stored
        without = c.post(f"/review/{item}", data={"verdict": "true"})
        assert without.status_code == 403 and without.json()["code"] == "csrf"
        same = c.post(f"/review/{item}", data=form, follow_redirects=False,
                      headers={"origin": "http://testserver", "sec-fetch-site": "same-origin"})
        assert same.status_code == 303
        assert c.get(f"/api/v1/items/{item}").json()["review"]["reviewer"] == "local"


def test_open_mode_is_refused_beyond_loopback(folders, tmp_path):  # noqa: F811
    with pytest.raises(RecipeError, match="loopback only"):
        create_app(_planted(folders), tmp_path / "a", spec=ServerSpec(auth="off"),
                   host="0.0.0.0")
    app = create_app(_planted(folders), tmp_path / "b", host="0.0.0.0")
    assert app.state.open_mode is False
    assert create_app(_planted(folders), tmp_path / "c", host="::1").state.open_mode is True


def test_keys_are_stored_hashed_shown_once_and_revocable(tmp_path, folders):  # noqa: F811
    runner = CliRunner()
    data = str(tmp_path / "data")
    r = runner.invoke(cli, ["users", "add", "bot", "--role", "operator", "--no-password",
                            "--data-dir", data])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["keys", "create", "bot", "--data-dir", data])
    key = re.search(r"sk_[\w-]+", r.output).group(0)
    listing = runner.invoke(cli, ["keys", "list", "--data-dir", data]).output
    secret = key.split("_", 2)[2]
    assert key.split("_")[1] in listing and secret not in listing
    assert secret.encode() not in (tmp_path / "data" / "seglab.db").read_bytes()
    with TestClient(create_app(_planted(folders), data, host="0.0.0.0")) as c:
        assert c.get("/api/v1/stats", headers=_auth(key)).status_code == 200
        assert c.get("/api/v1/keys", headers=_auth(key)).status_code == 403  # not admin
        up = c.post("/api/v1/defects", headers=_auth(key),
                    files={"file": ("s.png", _png(_strip()))})
        assert up.status_code == 200
        assert runner.invoke(cli, ["keys", "revoke", key, "--data-dir", data]).exit_code == 0
        again = c.post("/api/v1/defects", headers=_auth(key),
                       files={"file": ("s.png", _png(_strip()))})
        assert again.status_code == 401
    assert "REVOKED" in runner.invoke(cli, ["keys", "list", "--data-dir", data]).output
    bad = runner.invoke(cli, ["users", "add", "x", "--role", "chief", "--no-password",
                              "--data-dir", data])
    assert bad.exit_code == 2 and "not one of viewer, operator, reviewer, admin" in bad.output
