"""Schema changes arrive as Alembic migrations: a database written before migrations
existed (items and reviews only) upgrades in place and keeps its rows."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from seglab.cli import app as cli
from seglab.serve import schema
from seglab.serve.auth import Accounts
from seglab.serve.store import Store

# Exactly what seglab 0.1.0 (before migrations) wrote: sqlite3 seglab.db .schema
PREVIOUS = """
CREATE TABLE items (
    id VARCHAR(32) NOT NULL, kind VARCHAR(16) NOT NULL, batch VARCHAR(32) NOT NULL,
    model VARCHAR(200) NOT NULL, filename VARCHAR(255) NOT NULL, width INTEGER NOT NULL,
    height INTEGER NOT NULL, verdict BOOLEAN NOT NULL, score FLOAT NOT NULL,
    result JSON NOT NULL, created DATETIME NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_items_batch ON items (batch);
CREATE INDEX ix_items_kind ON items (kind);
CREATE TABLE reviews (
    id INTEGER NOT NULL, item_id VARCHAR(32) NOT NULL, verdict BOOLEAN NOT NULL,
    agrees BOOLEAN NOT NULL, reviewer VARCHAR(100) NOT NULL, note VARCHAR(1000) NOT NULL,
    created DATETIME NOT NULL, PRIMARY KEY (id), FOREIGN KEY(item_id) REFERENCES items (id));
CREATE INDEX ix_reviews_item_id ON reviews (item_id);
INSERT INTO items VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'defects', 'b1', 'steel', 'a.png',
    1600, 256, 1, 0.93, '{"defective": true}', '2026-11-30 10:00:00.000000');
INSERT INTO reviews VALUES (1, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 0, 0, 'web', 'scratch?',
    '2026-11-30 11:00:00.000000');
"""


def _previous(folder):
    folder.mkdir()
    with sqlite3.connect(folder / "seglab.db") as db:
        db.executescript(PREVIOUS)


def test_a_database_of_the_previous_schema_upgrades_in_place(tmp_path):
    _previous(tmp_path / "old")
    store = Store(tmp_path / "old")  # SQLite: upgraded on opening
    assert schema.current(store.engine) == schema.head() == "0002"
    item = store.get("a" * 32)
    assert item.score == pytest.approx(0.93) and item.result == {"defective": True}
    assert [(r.reviewer, r.note, r.verdict) for r in item.reviews] == [("web", "scratch?", False)]
    Accounts(store).add_user("ann", "reviewer")  # the new tables are there
    store.review(item.id, True, reviewer="ann")
    assert [r.reviewer for r in store.get(item.id).reviews] == ["web", "ann"]


def test_other_databases_upgrade_only_on_request(tmp_path):
    _previous(tmp_path / "old")
    with pytest.raises(schema.SchemaError, match=r"revision none; this seglab needs 0002: run "
                                                 r"`seglab db upgrade"):
        Store(tmp_path / "old", migrate=False)
    runner = CliRunner()
    data = str(tmp_path / "old")
    assert "database at none; this seglab needs 0002" in runner.invoke(
        cli, ["db", "current", "--data-dir", data]).output
    r = runner.invoke(cli, ["db", "upgrade", "--data-dir", data])
    assert r.exit_code == 0 and "schema none -> 0002" in r.output
    assert "already at 0002" in runner.invoke(cli, ["db", "upgrade", "--data-dir", data]).output
    assert Store(tmp_path / "old", migrate=False).get("a" * 32).filename == "a.png"
