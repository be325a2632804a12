"""Load test of ``seglab serve``: concurrent clients, valid, invalid and hostile uploads,
on loopback, with sign-in on (API keys for an operator and a viewer).

    python benchmarks/loadtest.py --clients 32 --seconds 60            # tiny generated models
    python benchmarks/loadtest.py --models demo-output/run/model demo-output/run-cutout/model
    python benchmarks/loadtest.py --replicas 2 --postgres   # two replicas, one PostgreSQL

With ``--replicas N`` the servers share one database (``--db URL``, or ``--postgres``: a
throw-away PostgreSQL server started for the run) and one item store; clients are spread
over the replicas.

The server runs as its own process (as an unprivileged user when started as
root), with its data folder in a fresh temporary directory as its working
directory. Clients are threads of this process. Checks, reported at the end and
reflected in the exit status:

- every valid upload gets 200 (no 5xx at all),
- every invalid one gets exactly its 4xx (400, 413, 415, 422, 404), every hostile one
  too (no key or a forged one 401, a viewer uploading 403, a cross-site post 403, the
  633-byte "4500x4500" JPEG 422, a 1x2000 line 413),
- the server's resident memory does not keep growing from round to round,
- nothing is written outside the data folder.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _header_bomb() -> bytes:
    """The probe's 633-byte JPEG whose header declares 4500x4500 (16x16 of data)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (4500).to_bytes(2, "big") * 2
    return bytes(data)


OPERATOR, VIEWER = "operator", "viewer"
"""Which key a request carries (``None``: no key; any other text: sent as a forged key)."""


def requests_mix(max_upload_mb: float
                 ) -> list[tuple[str, str, str, bytes, set[int], str | None, dict[str, str]]]:
    """(name, path, filename, body, expected statuses, key, extra headers) for each kind
    of request: valid, invalid and hostile."""
    rng = np.random.default_rng(0)
    strip = rng.integers(60, 140, (128, 800, 3), dtype=np.uint8)
    photo = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    jpeg = _png(strip, "JPEG")
    big = os.urandom(int(max_upload_mb * 1e6) + 200_000)
    plain = [
        ("valid strip", "/api/v1/defects", "strip.png", _png(strip), {200}),
        ("valid strip jpeg", "/api/v1/defects", "strip.jpg", jpeg, {200}),
        ("valid photo", "/api/v1/cutout", "photo.png", _png(photo), {200}),
        ("empty file", "/api/v1/defects", "empty.jpg", b"", {400}),
        ("truncated jpeg", "/api/v1/defects", "cut.jpg", jpeg[: len(jpeg) // 3], {422}),
        ("text named .jpg", "/api/v1/cutout", "notes.jpg", b"hello, not an image\n" * 50,
         {415}),
        ("html named .jpg", "/api/v1/cutout", "page.jpg", b"<html><body>x</body></html>",
         {415}),
        ("over the size limit", "/api/v1/defects", "big.png", big, {413}),
        ("unknown model", "/api/v1/defects?model=nope", "strip.png", _png(strip), {404}),
        ("4500x4500 header bomb", "/api/v1/defects", "bomb.jpg", _header_bomb(), {422}),
        ("1x2000 line", "/api/v1/cutout", "line.png", _png(np.zeros((1, 2000, 3), np.uint8)),
         {413}),
    ]
    hostile = [
        ("no key", "/api/v1/defects", "strip.png", _png(strip), {401}, None, {}),
        ("forged key", "/api/v1/defects", "strip.png", _png(strip), {401},
         "sk_000000000000_forged", {}),
        ("viewer uploads", "/api/v1/defects", "strip.png", _png(strip), {403}, VIEWER, {}),
        ("cross-site post", "/api/v1/cutout", "photo.png", _png(photo), {403}, OPERATOR,
         {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}),
    ]
    return [(*row, OPERATOR, {}) for row in plain] + hostile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_models(folder: Path) -> list[Path]:
    """Small untrained model folders of both tasks (the service, not the model, is tested)."""
    from seglab.models import folder as modelfolder
    from seglab.models.network import build
    from seglab.recipes import load_recipe

    tiny = {"model": {"encoder": "resnet18", "encoder_depth": 3,
                      "decoder_channels": [16, 8, 4]}}
    out = []
    for name, size in (("cpu-demo", [128, 800]), ("cpu-demo-cutout", [128, 128])):
        recipe = load_recipe(name, {**tiny, "data": {"input_size": size}})
        out.append(modelfolder.save(folder / name, build(recipe.model),
                                    modelfolder.ModelConfig.from_recipe(recipe)))
    return out


SEGLAB = [sys.executable, "-m", "seglab.cli"]


def _unprivileged(*paths: Path) -> list[str]:
    """Prove the service needs no root: run it as nobody, owning only its folders."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return []
    for path in paths:
        for p in [path, *path.rglob("*")]:
            shutil.chown(p, "nobody", "nogroup")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _env(workdir: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(workdir), "MPLCONFIGDIR": str(workdir / "data" / ".mpl")}


def create_keys(workdir: Path, db: list[str], prefix: list[str]) -> dict[str, str]:
    """An API key per role the clients use (in the database every replica shares)."""
    keys = {}
    if db:  # a shared database is migrated once, on request, never by a replica
        subprocess.run([*prefix, *SEGLAB, "db", "upgrade", *db], cwd=workdir,
                       env=_env(workdir), check=True, capture_output=True)
    for role in (OPERATOR, VIEWER):
        subprocess.run([*prefix, *SEGLAB, "users", "add", f"load-{role}", "--role", role,
                        "--no-password", "--data-dir", "data", *db], cwd=workdir,
                       env=_env(workdir), check=True, capture_output=True)
        keys[role] = subprocess.run(
            [*prefix, *SEGLAB, "keys", "create", f"load-{role}", "--data-dir", "data", *db],
            cwd=workdir, env=_env(workdir), check=True, capture_output=True,
            text=True).stdout.strip()
    return keys


def start_server(models: list[Path], workdir: Path, port: int, max_upload_mb: float,
                 prefix: list[str], shared: list[str]) -> subprocess.Popen:
    """One replica with sign-in on; ``shared``: its --db and --store options, if any."""
    cmd = [*prefix, *SEGLAB, "serve", *map(str, models), "--port", str(port), "--data-dir",
           "data", "--max-upload-mb", str(max_upload_mb), "--auth", "on", *shared]
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            env=_env(workdir))


def run(models: list[Path] | None, clients: int, seconds: float, max_upload_mb: float,
        rounds: int = 4, replicas: int = 1, db: str | None = None) -> dict:
    import httpx

    if replicas > 1 and not db:
        raise SystemExit("replicas share one database: give --db URL or --postgres")
    tmp = Path(tempfile.mkdtemp(prefix="seglab-load-"))
    os.chmod(tmp, 0o755)
    models = models or tiny_models(tmp / "models")
    workdirs = [tmp / f"server-{i}" for i in range(replicas)]
    store = tmp / "store"  # the item store every replica shares (a shared filesystem)
    for w in [*workdirs, store]:
        w.mkdir()
    prefix = _unprivileged(*workdirs, store, *models)
    shared = ["--db", db, "--store", str(store)] if db else []
    keys = create_keys(workdirs[0], shared[:2], prefix)
    ports = [_free_port() for _ in workdirs]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    servers = [start_server(models, w, p, max_upload_mb, prefix, shared)
               for w, p in zip(workdirs, ports, strict=True)]
    base = bases[0]
    try:
        for srv, url, w in zip(servers, bases, workdirs, strict=True):
            for _ in range(600):
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if srv.poll() is not None:
                    raise RuntimeError((w / "server.log").read_text())
                time.sleep(0.2)
        user = subprocess.run(["ps", "-o", "user=", "-p", str(servers[0].pid)],
                              capture_output=True,
                              text=True).stdout.strip()
        mix = requests_mix(max_upload_mb)
        results: dict[str, list[tuple[int, float]]] = defaultdict(list)
        failures: list[str] = []
        lock = threading.Lock()
        stop = time.time() + seconds

        def client(seed: int) -> None:
            rnd = random.Random(seed)
            with httpx.Client(base_url=bases[seed % len(bases)], timeout=120) as c:
                while time.time() < stop:
                    name, path, filename, body, expected, key, extra = rnd.choice(mix)
                    headers = {**extra, **({"authorization": f"Bearer {keys.get(key, key)}"}
                                           if key else {})}
                    t = time.perf_counter()
                    try:
                        r = c.post(path, files={"file": (filename, body)}, headers=headers)
                        status = r.status_code
                    except httpx.HTTPError as exc:
                        status = -1
                        detail = repr(exc)
                    latency = time.perf_counter() - t
                    with lock:
                        results[name].append((status, latency))
                        if status not in expected:
                            failures.append(f"{name}: got {status}, expected {expected} "
                                            f"{detail if status == -1 else r.text[:200]}")

        memory: list[float] = []

        def sampler() -> None:
            while time.time() < stop:
                memory.append(sum(_rss_mb(srv.pid) for srv in servers))
                time.sleep(max(0.5, seconds / (rounds * 5)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        threads.append(threading.Thread(target=sampler))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        alive = all(srv.poll() is None and httpx.get(url + "/healthz").status_code == 200
                    for srv, url in zip(servers, bases, strict=True))
        stats = httpx.get(base + "/api/v1/stats",
                          headers={"authorization": f"Bearer {keys[VIEWER]}"}).json()
    finally:
        for srv in servers:
            srv.terminate()
        for srv in servers:
            try:
                srv.wait(timeout=30)
            except subprocess.TimeoutExpired:
                srv.kill()
    outside = sorted(f"{w.name}/{p.relative_to(w)}" for w in workdirs for p in w.rglob("*")
                     if p.name != "server.log" and not str(p.relative_to(w)).startswith("data"))
    per_round = [float(max(chunk)) for chunk in np.array_split(np.array(memory), rounds)
                 if len(chunk)]
    growth = float(per_round[-1] - per_round[1]) if len(per_round) > 2 else 0.0
    table = {}
    for name, rows in sorted(results.items()):
        lat = sorted(x[1] for x in rows)
        codes: dict[str, int] = defaultdict(int)
        for status, _ in rows:
            codes[str(status)] += 1
        table[name] = {"requests": len(rows), "statuses": dict(codes),
                       "p50_ms": 1000 * statistics.median(lat),
                       "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
                       "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))]}
    total = sum(len(v) for v in results.values())
    five = sum(1 for v in results.values() for s, _ in v if s >= 500 or s == -1)
    report = {
        "replicas": replicas, "database": "postgresql" if db and "postgres" in db else
        "sqlite", "clients": clients, "seconds": seconds, "requests": total,
        "requests_per_s": total / seconds, "server_user": user, "five_xx_or_dropped": five,
        "unexpected": len(failures), "first_unexpected": failures[:5],
        "rss_mb_per_round": [round(x, 1) for x in per_round],
        "rss_growth_mb_after_warmup": round(growth, 1), "alive_after": alive,
        "files_outside_data_folder": outside, "items_stored": stats["items"],
        "by_request": table,
    }
    report["passed"] = bool(not failures and five == 0 and alive and not outside
                        and growth < 150)
    shutil.rmtree(tmp, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="Load test of seglab serve on loopback.")
    parser.add_argument("--models", nargs="*", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-upload-mb", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the report here.")
    parser.add_argument("--replicas", type=int, default=1, help="Servers sharing one database.")
    parser.add_argument("--db", default=None, help="The database the replicas share.")
    parser.add_argument("--postgres", action="store_true",
                        help="Start a throw-away PostgreSQL server (tools/postgres.py).")
    args = parser.parse_args()
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tools"))
        import postgres

        with postgres.temporary_server() as server:
            db = postgres.create_database(server, "loadtest")
            report = run(args.models, args.clients, args.seconds, args.max_upload_mb,
                         replicas=args.replicas, db=db)
    else:
        report = run(args.models, args.clients, args.seconds, args.max_upload_mb,
                     replicas=args.replicas, db=args.db)
    for name, row in report["by_request"].items():
        print(f"{name:22s} n={row['requests']:5d} statuses={row['statuses']} "
              f"p50={row['p50_ms']:.0f} ms p95={row['p95_ms']:.0f} ms p99={row['p99_ms']:.0f} ms")
    print(json.dumps({k: v for k, v in report.items() if k != "by_request"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
