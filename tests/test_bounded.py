"""Bounded work per request: sides and aspect refused from the header, models without a
fixed input size bounded, a deadline after which nothing is stored, and a client that
hangs up cancelling its work."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image
from test_server import _planted, _png, _strip, folders  # noqa: F401 (fixture)

from seglab.serve.app import create_app
from seglab.serve.config import ServerSpec
from seglab.serve.service import ApiError, Service
from seglab.serve.store import Store


def _patched_jpeg(width: int, height: int) -> bytes:
    """A tiny JPEG whose header declares ``width`` x ``height`` (the probe's bomb)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _peak_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def test_sides_aspect_and_header_bombs_are_refused_fast(folders, tmp_path):  # noqa: F811
    with TestClient(create_app(_planted(folders), tmp_path / "d")) as c:
        before = _peak_mb()
        for _ in range(2):  # the probe's pair, which once took 13.5 GB and both slots
            r = c.post("/api/v1/defects", files={"file": ("bomb.jpg", _patched_jpeg(4500,
                                                                                    4500))})
            assert r.status_code == 422 and r.json()["code"] == "corrupt"
        assert _peak_mb() - before < 30  # a 4500x4500 RGB decode alone would take 58 MiB
        for name, data, status in [
            ("line.png", _png(np.zeros((1, 2000, 3), np.uint8)), 413),  # aspect 2000
            ("wide.png", _png(np.zeros((20, 12000, 3), np.uint8)), 413),  # side > 10000
            ("bomb.jpg", _patched_jpeg(4500, 4500), 422),  # data ends long before the header
        ]:
            start = time.perf_counter()
            r = c.post("/api/v1/defects", files={"file": (name, data)})
            assert r.status_code == status, (name, r.text)
            assert time.perf_counter() - start < 5, name
        assert len(_patched_jpeg(4500, 4500)) < 1000
        assert c.get("/api/v1/items").json() == []  # nothing stored
        ok = c.post("/api/v1/defects", files={"file": ("s.png", _png(_strip()))})
        assert ok.status_code == 200


def test_a_model_without_input_size_is_bounded(folders, tmp_path):  # noqa: F811
    models = _planted(folders)
    models[0].predictor.input_size = None  # runs at each image's own size
    spec = ServerSpec(max_model_pixels=100_000)
    with TestClient(create_app(models, tmp_path / "d", spec=spec)) as c:
        r = c.post("/api/v1/defects", files={"file": ("big.png", _png(np.zeros((400, 400, 3),
                                                                             np.uint8)))})
        assert r.status_code == 413 and "own size" in r.json()["detail"]
        assert c.post("/api/v1/defects", files={"file": ("s.png", _png(_strip()))}
                      ).status_code == 200  # 64x400 fits


def test_past_its_deadline_work_is_cancelled_and_nothing_stored(tmp_path):
    store = Store(tmp_path)
    service = Service([], store, ServerSpec(max_concurrent=1, request_timeout_s=0.3))
    image = np.zeros((8, 8, 3), np.uint8)

    def slow_store(job):
        time.sleep(0.8)
        job.check()
        store.add(kind="defects", batch="b", model="m", filename="f.png", image=image,
                  verdict=False, score=0.0, result={}, files={}, commit=job.commit)

    async def go():
        start = time.perf_counter()
        with pytest.raises(ApiError) as late:
            await service.run(slow_store)
        answered = time.perf_counter() - start
        # The slot stays taken until the abandoned thread ends, then frees itself.
        with pytest.raises(ApiError) as busy:
            await service.run(lambda job: None)
        assert busy.value.status == 503
        await asyncio.sleep(0.6)
        await service.run(lambda job: None)
        return late.value, answered

    err, answered = asyncio.run(go())
    assert err.status == 504 and err.code == "deadline_exceeded"
    assert answered < 0.7
    assert store.items() == []
    assert not (tmp_path / "items").exists() or not list((tmp_path / "items").iterdir())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_client_that_hangs_up_cancels_its_work(folders, tmp_path):  # noqa: F811
    models = _planted(folders)
    planted = models[0].predictor
    original = planted.probabilities

    def slow(images):
        time.sleep(1.5)
        return original(images)

    planted.probabilities = slow
    app = create_app(models, tmp_path / "d")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        body = _png(_strip())
        boundary = "seglabboundary"
        payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                   f"filename=\"s.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + body + \
            f"\r\n--{boundary}--\r\n".encode()
        head = (f"POST /api/v1/defects HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head + payload)
            time.sleep(0.4)  # the model is running
        time.sleep(2.5)  # the model finished; the result must have been dropped
        store = app.state.service.store
        assert store.items() == []
        planted.probabilities = original
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/defects", data=payload,
                                     headers={"Content-Type": "multipart/form-data; "
                                              f"boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=30) as reply:
            assert reply.status == 200
        assert len(store.items()) == 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
