"""A short run of the service load test (the 60-second, 32-client run is in docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import loadtest


def test_service_under_concurrent_valid_and_invalid_uploads():
    report = loadtest.run(None, clients=8, seconds=10, max_upload_mb=1.0, rounds=2)
    assert report["five_xx_or_dropped"] == 0, report["first_unexpected"]
    assert report["unexpected"] == 0, report["first_unexpected"]
    assert report["alive_after"] and report["files_outside_data_folder"] == []
    kinds = report["by_request"]
    assert len(kinds) == 15 and all(row["requests"] > 0 for row in kinds.values())
    for hostile, status in [("no key", "401"), ("forged key", "401"), ("viewer uploads", "403"),
                            ("cross-site post", "403"), ("4500x4500 header bomb", "422")]:
        assert set(kinds[hostile]["statuses"]) == {status}, hostile
    assert kinds["over the size limit"]["statuses"] == {"413": kinds["over the size limit"][
        "requests"]}
    stored = report["items_stored"]
    assert stored["defects"] == sum(kinds[k]["requests"] for k in ("valid strip",
                                                                    "valid strip jpeg"))
    assert stored["cutout"] == kinds["valid photo"]["requests"]
    if os.geteuid() == 0:
        assert report["server_user"] == "nobody"

