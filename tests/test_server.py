"""The web service: every endpoint, bad uploads with exact statuses, storage, pages."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from seglab.data import rle
from seglab.infer.predictor import Predictor, load_model
from seglab.models import folder as modelfolder
from seglab.models.network import build
from seglab.recipes import load_recipe
from seglab.serve.app import create_app
from seglab.serve.config import ServerSpec
from seglab.serve.limits import UploadLimit
from seglab.serve.service import ApiError, LoadedModel, Service
from seglab.serve.store import Store


class _Planted(Predictor):
    """A real predictor whose probabilities are a known function of the image.

    Class 0 (defects) or the foreground (cut-out) is wherever the red channel is
    above 200, so a test paints a red patch and knows the exact expected mask.
    """

    def probabilities(self, images):
        out = []
        for img in images:
            on = img[..., 0] > 200
            probs = np.where(on, 0.999, 0.001).astype(np.float32)
            stack = np.zeros((len(self.class_names), *on.shape), np.float32) + 0.001
            stack[0] = probs
            out.append((stack, stack.reshape(len(stack), -1).max(axis=1)))
        return out


def _model(tmp_path, recipe_name, overrides):
    recipe = load_recipe(recipe_name, overrides)
    folder = modelfolder.save(tmp_path / recipe_name, build(recipe.model),
                              modelfolder.ModelConfig.from_recipe(recipe))
    return folder


TINY = {"model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [8, 8, 4]},
        "data": {"input_size": [64, 64]}}


def _csrf(client, path="/defects"):
    """The CSRF token a page's forms carry (every form post needs it)."""
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found, "the page has no CSRF field"
    return found.group(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    defects = _model(tmp, "cpu-demo", {**TINY, "model": {**TINY["model"], "aux_head": False}})
    cutout = _model(tmp, "cpu-demo-cutout", TINY)
    return defects, cutout


def _planted(folders):
    out = []
    for folder in folders:
        real = load_model(folder)
        out.append(LoadedModel(real.config.recipe, folder, _Planted(real.net, real.config)))
    return out


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _strip(patch: tuple[slice, slice] | None = None) -> np.ndarray:
    img = np.full((64, 400, 3), 90, np.uint8)
    if patch:
        img[patch] = (255, 40, 40)
    return img


@pytest.fixture
def client(folders, tmp_path):
    spec = ServerSpec(max_upload_mb=0.5, max_pixels=1_000_000, max_files=4)
    app = create_app(_planted(folders), tmp_path / "data", spec=spec)
    with TestClient(app) as c:
        yield c


def test_health_and_models(client):
    assert client.get("/healthz").json()["status"] == "ok"
    models = client.get("/api/v1/models").json()
    assert [m["task"] for m in models] == ["defects", "cutout"]
    assert models[0]["classes"] == ["defect_1", "defect_2", "defect_3", "defect_4"]
    assert models[0]["parameters"] > 1000


def test_api_docs_are_served_from_the_package_with_no_network(client):
    import re

    for page, asset in [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]:
        html = client.get(page).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert urls and not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        script = next(u for u in urls if u.endswith(asset))
        body = client.get(script)
        assert body.status_code == 200 and len(body.content) > 100_000, script
    assert "/api/v1/cutout" in client.get("/openapi.json").json()["paths"]


def test_defect_check_returns_verdict_areas_rle_and_overlay(client):
    r = client.post("/api/v1/defects",
                    files={"file": ("strip.png", _png(_strip((slice(10, 30), slice(50, 80)))),
                                    "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["defective"] is True and body["defect_score"] == pytest.approx(0.999, abs=1e-3)
    first = body["classes"][0]
    assert first["area"] == 20 * 30 and body["classes_found"] == [first["name"]]
    mask = rle.decode(first["rle"], (64, 400))
    assert mask[10:30, 50:80].all() and mask.sum() == 600
    assert all(c["area"] == 0 and c["rle"] == "" for c in body["classes"][1:])
    overlay = client.get(body["overlay_url"])
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
    width, height = Image.open(io.BytesIO(overlay.content)).size
    assert width == 400 and 64 < height <= 64 + 44  # the strip, then its legend band
    normal = client.post("/api/v1/defects", files={"file": ("n.png", _png(_strip()))}).json()
    assert normal["defective"] is False and normal["classes_found"] == []


@pytest.mark.parametrize(("name", "data", "status", "code"), [
    ("empty.jpg", b"", 400, "empty"),
    ("truncated.jpg", None, 422, "corrupt"),
    ("notes.jpg", b"this is text, not a JPEG\n" * 10, 415, "not_image"),
    ("page.jpg", b"<html><body>hello</body></html>", 415, "not_image"),
    ("anim.gif", None, 415, "not_image"),
    ("huge.png", None, 413, "too_large"),
])
def test_bad_uploads_get_exact_statuses_and_the_server_goes_on(client, name, data, status,
                                                               code):
    if name == "truncated.jpg":
        data = _png(_strip((slice(0, 9), slice(0, 9))), "JPEG")[:300]
    elif name == "anim.gif":
        data = _png(_strip(), "GIF")
    elif name == "huge.png":  # 1.2 Mpx, over the 1 Mpx limit, but a small file
        data = _png(np.zeros((1000, 1200, 3), np.uint8))
    r = client.post("/api/v1/defects", files={"file": (name, data, "image/jpeg")})
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and name in r.json()["detail"]
    ok = client.post("/api/v1/cutout", files={"file": ("ok.png", _png(_strip()))})
    assert ok.status_code == 200


def test_oversized_body_missing_field_unknown_model_and_too_many_files(client):
    big = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    r = client.post("/api/v1/defects", files={"file": ("big.png", _png(big))})
    assert r.status_code == 413 and "0.5 MB limit" in r.json()["detail"]
    assert client.post("/api/v1/defects").status_code == 422
    r = client.post("/api/v1/defects?model=nope", files={"file": ("a.png", _png(_strip()))})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = client.post("/api/v1/cutout/batch",
                    files=[("files", (f"{i}.png", _png(_strip()))) for i in range(5)])
    assert r.status_code == 413 and r.json()["code"] == "too_many_files"
    assert client.get("/api/v1/items/0123").status_code == 404
    assert client.get("/files/../../etc/passwd").status_code == 404
    assert client.get("/files/" + "a" * 32 + "/..%2F..%2Fseglab.db").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_batch_reports_the_bad_file_and_processes_the_rest(client):
    files = [("files", ("a.png", _png(_strip((slice(0, 8), slice(0, 8)))))),
             ("files", ("b.jpg", b"\xff\xd8\xff\xe0 broken")),
             ("files", ("c.png", _png(_strip())))]
    r = client.post("/api/v1/defects/batch", files=files)
    assert r.status_code == 200
    body = r.json()
    assert [x["filename"] for x in body["results"]] == ["a.png", "c.png"]
    assert [x["defective"] for x in body["results"]] == [True, False]
    assert body["errors"][0]["filename"] == "b.jpg" and body["errors"][0]["status"] in (415, 422)


def test_cutout_accepts_or_keeps_the_original_with_the_reason(client):
    sure = np.zeros((100, 100, 3), np.uint8)
    sure[20:70, 30:80] = (250, 10, 10)  # 25% of the image
    r = client.post("/api/v1/cutout", files={"file": ("ring.png", _png(sure))})
    body = r.json()
    assert body["accepted"] is True and body["reason"] == ""
    assert body["area_fraction"] == pytest.approx(0.2496) and body["confidence"] > 0.99
    png = client.post("/api/v1/cutout?format=png", files={"file": ("ring.png", _png(sure))})
    assert png.headers["x-seglab-accepted"] == "true"
    rgba = np.asarray(Image.open(io.BytesIO(png.content)))
    assert rgba.shape == (100, 100, 4) and rgba[0, 0, 3] == 0 and rgba[40, 50, 3] == 255
    tiny = np.zeros((100, 100, 3), np.uint8)
    tiny[40:50, 40:50] = (250, 10, 10)  # 1%: below the 5% minimum
    png = client.post("/api/v1/cutout?format=png", files={"file": ("t.png", _png(tiny))})
    assert png.headers["x-seglab-accepted"] == "false"
    assert "below the 5% minimum" in png.headers["x-seglab-reason"]
    assert (np.asarray(Image.open(io.BytesIO(png.content))) == tiny).all()
    rejected = client.post("/api/v1/cutout", files={"file": ("t.png", _png(tiny))}).json()
    shown, original = (client.get(rejected[f"{f}_url"]).content for f in ("shown", "original"))
    assert shown == original  # the original, encoded once and stored twice
    white = client.post("/api/v1/cutout?background=%23ffffff",
                        files={"file": ("ring.png", _png(sure))}).json()
    on_white = np.asarray(Image.open(io.BytesIO(client.get(white["cutout_url"]).content)))
    assert on_white.shape == (100, 100, 3) and (on_white[0, 0] == 255).all()
    assert client.post("/api/v1/cutout?background=pink",
                       files={"file": ("r.png", _png(sure))}).status_code == 400


def test_reviews_are_stored_and_survive_a_restart(folders, tmp_path):
    data = tmp_path / "data"
    with TestClient(create_app(_planted(folders), data)) as c:
        item = c.post("/api/v1/defects",
                      files={"file": ("s.png", _png(_strip((slice(5, 9), slice(5, 9)))))}).json()
        assert [i["id"] for i in c.get("/api/v1/items?unreviewed=true").json()] == [item["id"]]
        r = c.post(f"/api/v1/items/{item['id']}/review",
                   json={"verdict": False, "reviewer": "ana", "note": "dust, not a defect"})
        assert r.json()["review"]["agrees"] is False
        assert c.get("/api/v1/items?unreviewed=true").json() == []
        assert c.post(f"/api/v1/items/{item['id']}/review", json={"x": 1}).status_code == 422
    with TestClient(create_app(_planted(folders), data)) as c:  # a restarted server
        again = c.get(f"/api/v1/items/{item['id']}").json()
        assert again["review"]["note"] == "dust, not a defect" and again["defective"] is True
        assert c.get(again["original_url"]).status_code == 200
        stats = c.get("/api/v1/stats").json()
        assert stats["items"]["defects"] == 1 and stats["overridden"] == 1
        assert stats["defects_per_class"] == {again["classes"][0]["name"]: 1}


def test_pages_render_and_forms_work(client):
    for path, text in [("/", "Models"), ("/defects", "Defect check"),
                       ("/cutout", "Background removal"), ("/review", "Review queue"),
                       ("/stats", "Statistics")]:
        r = client.get(path)
        assert r.status_code == 200 and text in r.text and "text/html" in r.headers[
            "content-type"]
    r = client.post("/defects", files=[("files", ("s1.png", _png(_strip((slice(0, 9),
                                                                         slice(0, 9)))))),
                                       ("files", ("bad.png", b"nope"))],
                    data={"csrf": _csrf(client)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/batch/")
    page = client.get(r.headers["location"])
    assert "defective" in page.text and "bad.png" in page.text and "HTTP 415" in page.text
    item_id = client.get("/api/v1/items").json()[0]["id"]
    detail = client.get(f"/items/{item_id}")
    assert "legend" in detail.text and "is defect" not in detail.text
    assert "highest image-level probability 1.00" in detail.text and "decided by" in detail.text
    r = client.post(f"/review/{item_id}", data={"verdict": "true", "back": "//evil.example",
                                                "csrf": _csrf(client)},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/review"
    assert "confirmed the model" in client.get(f"/items/{item_id}").text
    stats = client.get("/stats").text
    assert 'id="stat-reviewed">1<' in stats
    svg = client.get("/charts/defect-scores.svg")
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.content.lstrip().startswith(b"<?xml")
    assert client.get("/charts/nope.svg").status_code == 404
    missing = client.get("/items/" + "b" * 32, headers={"accept": "text/html"})
    assert missing.status_code == 404 and "Error 404" in missing.text
    assert client.get("/openapi.json").json()["paths"]["/api/v1/defects"]


def test_upload_limit_refuses_before_reading_the_whole_body():
    reads = []

    async def app(scope, receive, send):  # an app that reads everything it is given
        while True:
            message = await receive()
            reads.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break

    async def receive():
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": []}  # chunked: no Content-Length
    asyncio.run(UploadLimit(app, max_bytes=5000)(scope, receive, send))
    assert sum(reads) <= 5000 and len(reads) == 5
    assert sent[0]["status"] == 413
    sent.clear()
    scope["headers"] = [(b"content-length", b"999999999")]
    asyncio.run(UploadLimit(app, max_bytes=5000)(scope, receive, send))
    assert sent[0]["status"] == 413 and len(reads) == 5  # nothing more was read
    assert json.loads(sent[1]["body"])["code"] == "too_large"


def _nap(seconds, job):
    """Work for ``Service.run``: sleep, then stop if the job was cancelled meanwhile."""
    time.sleep(seconds)
    job.check()


def test_inference_slots_queue_then_time_out(tmp_path):
    service = Service([], Store(tmp_path), ServerSpec(max_concurrent=1, queue_timeout_s=0.2))

    async def both():
        slow = asyncio.create_task(service.run(_nap, 0.6))
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as refused:
            await service.run(_nap, 0)
        await slow
        await service.run(_nap, 0)  # the slot is free again
        return refused.value

    err = asyncio.run(both())
    assert err.status == 503 and err.code == "busy"


def test_real_models_serve_end_to_end(folders, tmp_path):
    """The untrained tiny models through the real predictor: shapes and types, no plants."""
    with TestClient(create_app(list(folders), tmp_path / "d")) as c:
        body = c.post("/api/v1/defects", files={"file": ("s.png", _png(_strip()))}).json()
        assert len(body["classes"]) == 4 and 0 <= body["defect_score"] <= 1
        cut = c.post("/api/v1/cutout", files={"file": ("p.jpg", _png(_strip(), "JPEG"))})
        assert cut.status_code == 200 and isinstance(cut.json()["accepted"], bool)


def test_empty_charts_say_no_data_yet_without_meaningless_axes():
    from seglab.serve.charts import chart_svg

    empty = chart_svg("hist", [], title="confidence").decode()
    assert "no data yet" in empty and "images" not in empty  # no y-axis label over nothing
    bars = chart_svg("bars", {}, title="classes").decode()
    assert "no data yet" in bars
    full = chart_svg("hist", [0.2, 0.9, 0.95], title="confidence", xlabel="p").decode()
    assert "no data yet" not in full


def test_strip_tiles_take_a_row_and_long_names_do_not_overflow(client):
    name = "a-very-long-file-name-from-the-line-camera-" + "x" * 60 + ".png"
    r = client.post("/api/v1/defects", files={"file": (name, _png(_strip((slice(10, 30),
                                                                        slice(50, 80)))),
                                                        "image/png")})
    assert r.status_code == 200, r.text
    page = client.get("/review?show=all").text
    assert "strip\" data-item=" in page  # 400x64: a strip tile, which spans the row
    assert f'class="muted name" title="{name}"' in page
    css = client.get("/static/seglab.css").text
    assert ".tile.strip" in css and "text-overflow: ellipsis" in css


def test_header_patched_jpeg_is_refused_as_corrupt_through_api_and_cli(client, tmp_path):
    import subprocess
    import sys

    from test_io import header_patched_jpeg

    r = client.post("/api/v1/defects",
                    files={"file": ("patched.jpg", header_patched_jpeg(1600, 256), "image/jpeg")})
    assert r.status_code == 422 and "corrupt or truncated JPEG" in r.json()["detail"], r.text
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "patched.jpg").write_bytes(header_patched_jpeg(1600, 256))
    run = subprocess.run([sys.executable, "-m", "seglab.cli", "predict", "steel-defects",
                          str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "corrupt or truncated JPEG" in run.stderr, run.stderr
    assert "patched.jpg" not in (tmp_path / "out" / "submission.csv").read_text()


def test_odd_requests_get_their_documented_status_and_code(client):
    """Issue 17 point 6: each answered with its status and {"detail", "code"}."""
    r = client.get("/api/v1/items?offset=99999999999999999999")
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    r = client.get("/api/v1/no-such-endpoint")
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    r = client.delete("/api/v1/models")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed", r.text
    long_id = "x" * 5_000  # (the client caps URLs; the server would echo any length)
    r = client.get(f"/api/v1/items/{long_id}")
    assert r.status_code == 404 and len(r.text) < 500, len(r.text)  # not echoed in full

    def chunks():
        for _ in range(20):
            yield b"\0" * 100_000  # 2 MB against a 0.5 MB limit, no Content-Length

    r = client.post("/api/v1/defects", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and r.json()["code"] == "too_large", r.text


def test_a_forged_host_header_is_never_reflected(client):
    evil = {"host": "evil.example"}
    r = client.post("/api/v1/defects", headers=evil,
                    files={"file": ("s.png", _png(_strip()), "image/png")})
    assert r.status_code == 200 and "evil.example" not in r.text
    assert r.json()["overlay_url"].startswith("/files/")
    r = client.post("/defects", headers=evil,
                    files=[("files", ("s.png", _png(_strip()), "image/png"))],
                    data={"csrf": _csrf(client)}, follow_redirects=False)
    assert r.status_code == 303 and "evil.example" not in r.headers["location"]
    page = client.get("/", headers=evil).text
    assert "evil.example" not in page
