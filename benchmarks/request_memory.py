"""Peak memory and time of one service request by image size, for the zoo models.

    python benchmarks/request_memory.py                  # 0.25, 1, 4, 16, 36 Mpx
    python benchmarks/request_memory.py --mpx 1 16

Each measurement runs in a fresh process (so the peak is that request's alone): it
loads the service with the zoo's models, sends one warm-up request of 64x64, then
the measured one through the real ASGI app, and reports the growth of the process's
peak resident memory (``VmHWM``) over what it was with the body already made, and the
wall time. The request body limit is raised to 400 MB (random-textured PNGs compress
poorly); every other limit is the service's default. The peak per
request times ``max_concurrent`` bounds what the inference slots can hold at once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import io, json, sys, time
import numpy as np
from PIL import Image
from fastapi.testclient import TestClient
from seglab.models import zoo
from seglab.serve.app import create_app
from seglab.serve.config import ServerSpec

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024

def png(h, w):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h)))
    buf = io.BytesIO(); Image.fromarray(img).save(buf, "PNG"); return buf.getvalue()

path, mpx, data = sys.argv[1], float(sys.argv[2]), sys.argv[3]
# Only the body limit is raised (random-textured PNGs compress poorly); every other
# limit is the service's default.
app = create_app([zoo.resolve(n) for n in zoo.names()], data,
                 spec=ServerSpec(max_upload_mb=400))
with TestClient(app) as c:
    assert c.post(path, files={"file": ("w.png", png(64, 64))}).status_code == 200
    side = int((mpx * 1e6) ** 0.5)
    body = png(side, side)  # made before the baseline: the growth is the request's
    base = hwm()
    t = time.perf_counter()
    r = c.post(path, files={"file": ("m.png", body)})
    took = time.perf_counter() - t
    print(json.dumps({"status": r.status_code, "seconds": round(took, 2),
                      "peak_growth_mb": round(hwm() - base, 1), "peak_mb": round(hwm(), 1),
                      "side": side}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mpx", type=float, nargs="*", default=[0.25, 1, 4, 16, 36])
    args = parser.parse_args()
    import tempfile

    print("| request | image | status | time | peak growth | process peak |")
    print("|---|---|---|---:|---:|---:|")
    for path in ("/api/v1/cutout", "/api/v1/defects"):
        for mpx in args.mpx:
            with tempfile.TemporaryDirectory() as data:
                out = subprocess.run([sys.executable, "-c", CHILD, path, str(mpx), data],
                                     capture_output=True, text=True, timeout=900)
            if out.returncode:
                print(f"| {path} | {mpx} Mpx | failed: {out.stderr.strip()[-200:]} |")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| `POST {path}` | {row['side']}x{row['side']} ({mpx:g} Mpx) | "
                  f"{row['status']} | {row['seconds']:.2f} s | {row['peak_growth_mb']:.0f} MB "
                  f"| {row['peak_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
