"""The service as replicas: two ``seglab serve`` processes sharing one real PostgreSQL
server (started by the test, see ``conftest.postgres_server``) and one item store.
An item uploaded to one is reviewed on the other and counted by the first; a database of
the previous schema upgrades in place on PostgreSQL as on SQLite."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text
from typer.testing import CliRunner

from seglab.cli import app as cli
from seglab.serve import schema
from seglab.serve.auth import Accounts
from seglab.serve.files import ItemFiles
from seglab.serve.store import Store, create_database_engine, database_url

# What seglab 0.1.0 (before migrations) wrote on PostgreSQL: pg_dump --schema-only, trimmed
PREVIOUS_PG = """
CREATE TABLE items (
    id VARCHAR(32) NOT NULL, kind VARCHAR(16) NOT NULL, batch VARCHAR(32) NOT NULL,
    model VARCHAR(200) NOT NULL, filename VARCHAR(255) NOT NULL, width INTEGER NOT NULL,
    height INTEGER NOT NULL, verdict BOOLEAN NOT NULL, score FLOAT NOT NULL,
    result JSON NOT NULL, created TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_items_batch ON items (batch);
CREATE INDEX ix_items_kind ON items (kind);
CREATE TABLE reviews (
    id SERIAL NOT NULL, item_id VARCHAR(32) NOT NULL, verdict BOOLEAN NOT NULL,
    agrees BOOLEAN NOT NULL, reviewer VARCHAR(100) NOT NULL, note VARCHAR(1000) NOT NULL,
    created TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(item_id) REFERENCES items (id));
CREATE INDEX ix_reviews_item_id ON reviews (item_id);
INSERT INTO items VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'defects', 'b1', 'steel', 'a.png',
    1600, 256, true, 0.93, '{"defective": true}', '2026-11-30 10:00:00+00');
INSERT INTO reviews (item_id, verdict, agrees, reviewer, note, created) VALUES
    ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', false, false, 'web', 'scratch?', '2026-11-30 11:00:00+00');
"""


def test_database_urls():
    assert database_url("d", "postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("d", "postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url(Path("/srv/x")).startswith("sqlite:////srv/x/seglab.db")


def test_a_postgres_database_of_the_previous_schema_upgrades_in_place(postgres_url, tmp_path):
    engine = create_database_engine(database_url(tmp_path, postgres_url))
    with engine.begin() as conn:
        for statement in filter(str.strip, PREVIOUS_PG.split(";")):
            conn.execute(text(statement))
    # A replica never migrates by itself: it refuses, naming the command.
    with pytest.raises(schema.SchemaError, match="run `seglab db upgrade"):
        Store(tmp_path, postgres_url)
    r = CliRunner().invoke(cli, ["db", "upgrade", "--db", postgres_url])
    assert r.exit_code == 0 and f"schema none -> {schema.head()}" in r.output, r.output
    store = Store(tmp_path, postgres_url)
    item = store.get("a" * 32)
    assert item.score == pytest.approx(0.93) and item.result == {"defective": True}
    assert [(r.reviewer, r.note, r.verdict) for r in item.reviews] == [("web", "scratch?", False)]
    Accounts(store).add_user("ann", "reviewer")
    store.review(item.id, True, reviewer="ann")  # the sequence behind reviews.id carries on
    assert [r.reviewer for r in store.get(item.id).reviews] == ["web", "ann"]
    assert store.stats()["overridden"] == 1


def test_item_files_in_an_object_store(tmp_path):
    """fsspec's in-memory filesystem stands in for s3:// here: the same code path (no
    local file, bytes through fsspec) as any object store."""
    files = ItemFiles("memory://seglab-test/items")
    assert not files.local
    item = "0123456789abcdef" * 2
    files.write(item, "shown", b"\x89PNG...")
    assert files.read(item, "shown") == b"\x89PNG..." and files.exists(item, "shown")
    with pytest.raises(KeyError):
        files.read(item, "mask")
    with pytest.raises(KeyError):
        files.path("../../etc", "shown")
    with pytest.raises(KeyError):
        files.path(item, "passwd")
    files.remove(item)
    assert not files.exists(item, "shown")
    store = Store(tmp_path, files="memory://seglab-test/store")
    image = np.zeros((40, 60, 3), np.uint8)
    added = store.add(kind="cutout", batch="b", model="m", filename="a.png", image=image,
                      verdict=False, score=0.5, result={}, files={"shown": image})
    png = store.files.read(added.id, "shown")
    assert Image.open(io.BytesIO(png)).size == (60, 40)
    assert not (tmp_path / "items").exists()  # nothing went to the local disk


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _replica(tmp: Path, name: str, db: str, store: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - the process holds it
    proc = subprocess.Popen(
        [sys.executable, "-m", "seglab", "serve", "jewellery-cutout", "--host", "127.0.0.1",
         "--port", str(port), "--auth", "on", "--db", db, "--store", str(store),
         "--data-dir", str(tmp / name), "--max-concurrent", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc, f"http://127.0.0.1:{port}"


def _wait(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"replica exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"replica not ready: {log.read_text()[-2000:]}")


def test_two_replicas_share_one_postgres_and_one_store(postgres_url, tmp_path, shared_data):
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "--db", postgres_url]).exit_code == 0
    r = runner.invoke(cli, ["users", "add", "rita", "--role", "reviewer", "--no-password",
                            "--db", postgres_url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["keys", "create", "rita", "--db", postgres_url])
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("sk_")
    store = tmp_path / "shared-store"  # a folder every replica mounts
    a, url_a = _replica(tmp_path, "a", postgres_url, store)
    b, url_b = _replica(tmp_path, "b", postgres_url, store)
    auth = {"Authorization": f"Bearer {key}"}
    photo = shared_data / "jewellery-photos" / "AlexaDiamondEarrings1.webp"
    try:
        _wait(a, url_a, tmp_path / "a.log")
        _wait(b, url_b, tmp_path / "b.log")
        up = httpx.post(f"{url_a}/api/v1/cutout", headers=auth, timeout=120,
                        files={"file": (photo.name, photo.read_bytes(), "image/webp")})
        assert up.status_code == 200, up.text
        item = up.json()
        # Replica B sees the item A stored, serves its files from the shared store ...
        seen = httpx.get(f"{url_b}/api/v1/items/{item['id']}", headers=auth, timeout=30)
        assert seen.status_code == 200 and seen.json()["score"] == pytest.approx(item["score"])
        shown = httpx.get(f"{url_b}/files/{item['id']}/shown.png", headers=auth, timeout=30)
        assert shown.status_code == 200
        with Image.open(io.BytesIO(shown.content)) as im:
            assert im.size == (item["width"], item["height"])
        # ... and takes the review, which A's statistics count.
        verdict = not item["verdict"]
        rev = httpx.post(f"{url_b}/api/v1/items/{item['id']}/review", headers=auth, timeout=30,
                         json={"verdict": verdict, "note": "checked on replica b"})
        assert rev.status_code == 200, rev.text
        assert rev.json()["review"]["reviewer"] == "rita"
        stats = httpx.get(f"{url_a}/api/v1/stats", headers=auth, timeout=30).json()
        assert stats["items"]["cutout"] == 1 and stats["reviewed"] == 1
        assert stats["overridden"] == 1
        back = httpx.get(f"{url_a}/api/v1/items/{item['id']}", headers=auth, timeout=30).json()
        assert back["review"]["note"] == "checked on replica b"
        # A key revoked through one replica's database stops working on every replica.
        key_id = key.split("_")[1]
        assert runner.invoke(cli, ["keys", "revoke", key_id, "--db", postgres_url]
                             ).exit_code == 0
        for url in (url_a, url_b):
            assert httpx.get(f"{url}/api/v1/stats", headers=auth, timeout=30
                             ).status_code == 401
    finally:
        for proc in (a, b):
            proc.terminate()
        for proc in (a, b):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    # Nothing a replica needs was in its own data folder: item files are in the shared store.
    assert (store / item["id"] / "shown.png").is_file()
    assert not (tmp_path / "a" / "items").exists() and not (tmp_path / "b" / "items").exists()
