"""seglab's benchmark suite: each figure beside a baseline measured in the same run.

    python benchmarks/run.py            # everything, writes benchmarks/RESULTS.md
    python benchmarks/run.py rle synth  # some of: unet, cutout, zoo, rle, synth, train

Weights are never downloaded: the U-Nets are built with ``encoder_weights=None``.
Throughput does not depend on weight values, but mask agreement does (a random
U-Net's probabilities all sit near 0.5, where any rounding flips pixels), so the
ResNet50 U-Net is first fitted for a few steps to a simple target on real strips
(bright pixels), which makes its masks confident and non-trivial as a trained
model's are.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
rows: list[dict] = []


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn`` after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(bench: str, case: str, unit: str, baseline: float, value: float, extra: str = ""
           ) -> None:
    row = {"bench": bench, "case": case, "unit": unit, "baseline": baseline, "seglab": value,
           "ratio": value / baseline if baseline else float("nan"), "extra": extra}
    rows.append(row)
    print(f"{bench:8s} {case:44s} baseline {baseline:10.2f} {unit:9s} seglab {value:10.2f} "
          f"ratio {row['ratio']:6.2f}x {extra}", flush=True)


def strips(count: int, folder: str = "severstal-samples") -> list[np.ndarray]:
    """Real Severstal strips when ../shared is there, else generated demo strips."""
    from seglab.data.images import read_image

    files = sorted((SHARED / folder).glob("*.jpg"))[:count]
    if files:
        return [read_image(f) for f in files]
    from seglab.demo import make_strip

    rng = np.random.default_rng(len(folder))
    return [make_strip(rng, (256, 1600))[0] for _ in range(count)]


def bench_unet(repeats: int) -> None:
    """1. U-Net ResNet50, 4 classes: eager fp32 smp vs each seglab backend.

    The network is the Severstal recipe's (aux classifier head included). Export
    gets 16 strips: int8 calibrates on 8 and must also agree on the other 8; 20
    more strips (severstal-labelled) that export never sees give a third figure.
    """
    import segmentation_models_pytorch as smp

    from seglab import deploy as exporting
    from seglab.infer.runtimes import native_bf16
    from seglab.models import folder as modelfolder
    from seglab.models.network import SegmentationNet
    from seglab.recipes import load_recipe

    images, unseen = strips(16), strips(20, "severstal-labelled")
    torch.manual_seed(0)
    raw = smp.Unet("resnet50", encoder_weights=None, classes=4,
                   aux_params={"classes": 4, "dropout": 0.0})
    net = SegmentationNet(raw, 32, True)
    fitted = False
    for size in ((128, 800), (256, 1600)):
        recipe = load_recipe("severstal-unet-r50", {"model": {"encoder_weights": None},
                                                    "data": {"input_size": list(size)}})
        with tempfile.TemporaryDirectory() as tmp:
            config = modelfolder.ModelConfig.from_recipe(recipe)
            if not fitted:  # fitted once at 128x800; convolutions carry over to 256x1600
                loss = _fit_bright(net, images, size, config)
                print(f"unet     fitted: BCE {loss:.4f} after 60 steps", flush=True)
                fitted = True
            batch, other = _inputs(images, size, config), _inputs(unseen, size, config)
            folder = modelfolder.save(Path(tmp) / "m", net, config)
            t = time.perf_counter()
            record = exporting.export(folder, samples=batch, timing_batch=1,
                                     keep_refused=True)  # refused ones are timed too
            fallback = record["backends"].get("openvino-int8", {}).get("fp32_convolutions", [])
            print(f"unet     export {size[0]}x{size[1]}: {time.perf_counter() - t:.0f} s "
                  f"({len(fallback)} convolutions kept in fp32 by openvino-int8)", flush=True)
            for n, name, check, base, value, far in _backend_rows(
                    net, folder, record["backends"], batch, other, repeats):
                if value is None:
                    why = check.get("error") or check.get("skipped", "not checked")
                    print(f"unet     {name}: {why}")
                    continue
                held = (f", {check['heldout_mask_dice']:.4f} on the 8 held out from "
                        f"calibration" if "heldout_mask_dice" in check else "")
                report("unet", f"{size[0]}x{size[1]} batch {n} {name}", "img/s", base, value,
                       f"mask Dice vs fp32 {check['mask_dice']:.4f} on the 16 export "
                       f"strips{held}, {far:.4f} on 20 unseen; {_verdict(check)}")
            if size == (128, 800) and not native_bf16():
                _emulated_bf16(net, batch[:1])


def _emulated_bf16(net: torch.nn.Module, x: np.ndarray) -> None:
    """Why ``export`` and ``auto`` skip bf16 on a CPU without it in hardware: what bf16
    autocast costs there (one timed call; it is too slow for three)."""
    import copy

    from seglab.infer.runtimes import TorchBackend

    fp32, bf16 = TorchBackend(net), TorchBackend(copy.deepcopy(net), bf16=True)
    base = 1 / timed(lambda: fp32(x), 3)
    report("unet", "128x800 batch 1 torch-bf16 emulated", "img/s", base,
           1 / timed(lambda: bf16(x), 1),
           "no native bf16 on this CPU: why export does not check bf16 here and auto "
           "never picks it")


def _backend_rows(net: torch.nn.Module, folder: Path, checks: dict, samples: np.ndarray,
                  other: np.ndarray, repeats: int):
    """Yield (batch, backend, check, eager img/s, backend img/s, mask agreement on ``other``)
    for every backend the export checked, at batch 1 and 8; the two figures are None
    for a backend the export could not check."""
    from seglab import deploy as exporting
    from seglab.infer import runtimes

    def masks(run) -> np.ndarray:
        return np.concatenate([run(other[i:i + 4])[0] for i in range(0, len(other), 4)]) >= 0

    raw = net.net.eval()
    with torch.inference_mode():
        ref_other = masks(lambda x: [t.numpy() for t in net(torch.from_numpy(x))])
    for n in (1, 8):
        xt = torch.from_numpy(samples[:n])

        def eager(xt: torch.Tensor = xt) -> None:
            with torch.inference_mode():
                raw(xt)

        base = n / timed(eager, repeats)
        for name in TIMED:
            check = checks.get(name, {})
            if "mask_dice" not in check:
                yield n, name, check, base, None, None
                continue
            run = runtimes.open_backend(name, net, folder)
            value = n / timed(lambda run=run, x=samples[:n]: run(x), repeats)
            yield n, name, check, base, value, exporting.agreement(masks(run), ref_other)


def _verdict(check: dict) -> str:
    return ("passed" if check["passed"] else
            f"REFUSED by the export check: {check['refused_because']}")


ZOO_IMAGES = {"steel-defects": "neu-seg/images", "jewellery-cutout": "jewellery-scenes",
              "magnetic-tile": "magnetic-tile/MT_*/Imgs/*.jpg"}
"""Real images of each zoo model's kind: the first 16 go to the export check (int8
calibrates on 8 and is judged on the other 8 too), the next 20 are never seen by it.
A pattern's files are dealt round-robin over their folders, so magnetic-tile's export
and comparison tiles hold every class (by name alone, 25 of 36 were clean tiles)."""


def zoo_images(name: str) -> list[Path]:
    from seglab.data.images import list_images

    where = ZOO_IMAGES.get(name)
    if where is None:
        return []
    if "*" in where:  # the masks (.png) sit beside the photos (.jpg): only the photos
        folders: dict[Path, list[Path]] = {}
        for path in sorted(SHARED.glob(where)):
            folders.setdefault(path.parent, []).append(path)
        dealt = itertools.zip_longest(*folders.values())
        return [path for row in dealt for path in row if path is not None]
    return list_images(SHARED / where)


TIMED = ("torch-bf16", "onnx", "openvino", "openvino-bf16", "onnx-int8", "openvino-int8")
"""The backends timed beside eager fp32, in the order RESULTS.md lists them."""


def bench_zoo(repeats: int) -> None:
    """3. The shipped zoo models: eager fp32 vs each backend that `seglab export` checks.

    Each model is exported from a copy of its folder on 16 real images of its kind,
    exactly as a user's ``seglab export NAME --samples ...`` does, then every backend
    is timed on those images at batch 1 and 8 beside eager fp32 smp in the same run,
    and its masks are compared on 20 more real images the export never saw.
    """
    import shutil

    from seglab import deploy as exporting
    from seglab.models import folder as modelfolder
    from seglab.models import zoo

    for name in zoo.names():
        files = zoo_images(name)
        if len(files) < 36:
            print(f"zoo      {name}: skipped (needs 36 real images in ../shared/data)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(shutil.copytree(zoo.resolve(name), Path(tmp) / name))
            samples = exporting.sample_inputs(folder, files[:16], count=16)
            other = exporting.sample_inputs(folder, files[16:36], count=20)
            t = time.perf_counter()
            record = exporting.export(folder, samples=samples, keep_refused=True)
            print(f"zoo      {name} export: {time.perf_counter() - t:.0f} s", flush=True)
            net = modelfolder.load_net(folder)[0]
            hw = "x".join(map(str, samples.shape[2:]))
            for n, backend, check, base, value, far in _backend_rows(
                    net, folder, record["backends"], samples, other, repeats):
                if value is not None:
                    report("zoo", f"{name} {hw} batch {n} {backend}", "img/s", base, value,
                           f"mask Dice vs fp32 {check['mask_dice']:.4f} on 16 real images, "
                           f"{far:.4f} on 20 unseen; {_verdict(check)}")


def _inputs(images: list[np.ndarray], size: tuple[int, int], config) -> np.ndarray:
    from seglab.infer.predictor import preprocess

    mean = np.asarray(config.normalization.mean, np.float32) * 255
    std = np.asarray(config.normalization.std, np.float32) * 255
    return np.stack([preprocess(i, size, mean, std) for i in images])


def _fit_bright(net: torch.nn.Module, images: list[np.ndarray], size: tuple[int, int],
                config, steps: int = 60, crop: int | None = None) -> float:
    """Adam steps toward 'bright region = class 1' until the masks are confident.

    Regions, not pixels: brightness is smoothed first, so the masks are blobs with
    clean edges as a trained defect model's are (a per-pixel brightness target
    gives speckle, where every boundary pixel is a coin toss for any backend).
    With ``crop``, each step sees a seeded ``crop``-wide window of every image, the
    way full-size Severstal models are trained. Returns the last loss.
    """
    import cv2

    from seglab.infer.runtimes import native_bf16

    x = torch.from_numpy(_inputs(images[:4], size, config))
    smooth = np.stack([cv2.GaussianBlur(g, (0, 0), size[0] / 32) for g in x.mean(1).numpy()])
    target = torch.zeros(len(x), 4, *size)
    target[:, 0] = torch.from_numpy(smooth > np.quantile(smooth, 0.8)).float()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    rng = np.random.default_rng(0)
    bf16 = native_bf16()  # emulated bf16 (AVX2 only) is several times slower than fp32
    net.train()
    for _ in range(steps):
        xb, yb = x, target
        if crop is not None:  # column offsets on the encoder's stride of 32
            cols = [int(rng.integers(0, (size[1] - crop) // 32 + 1)) * 32 for _ in x]
            xb = torch.stack([f[:, :, c:c + crop] for f, c in zip(x, cols, strict=True)])
            yb = torch.stack([t[:, :, c:c + crop] for t, c in zip(target, cols, strict=True)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, classes = net(xb)
        # The classifier head learns which classes are present, as a trained one has.
        loss = bce(logits.float(), yb) + 0.4 * bce(classes.float(), yb.amax((2, 3)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return loss.item()


def bench_cutout(repeats: int) -> None:
    """2. Cut-out request (decode, preprocess, model, clean, gate, encode): a model fitted here
    at 512x512, then the shipped jewellery-cutout on real photos."""
    from seglab import deploy as exporting
    from seglab.data.images import read_image
    from seglab.models import folder as modelfolder
    from seglab.models.network import build
    from seglab.recipes import load_recipe

    recipe = load_recipe("jewellery-unet-effb3", {"data": {"input_size": [512, 512]}})
    photos = sorted((SHARED / "jewellery-photos").glob("*"))[:4]
    if photos:
        payloads = [_png_bytes(read_image(p)) for p in photos]
    else:
        payloads = [_png_bytes(np.random.default_rng(i).integers(0, 255, (600, 600, 3),
                                                                  dtype=np.uint8))
                    for i in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        net = build(recipe.model)
        config = modelfolder.ModelConfig.from_recipe(recipe)
        composites = _fit_cutout(net, recipe, config, Path(tmp))
        folder = modelfolder.save(Path(tmp) / "m", net, config)
        samples = np.concatenate([exporting.sample_inputs(folder, photos, count=4), composites])
        t = time.perf_counter()
        record = exporting.export(folder, samples=samples)
        print(f"cutout   export: {time.perf_counter() - t:.0f} s; " + ", ".join(
            f"{k} skipped (no native bf16)" if v.get("skipped") else
            f"{k} {'ok' if v['passed'] else 'refused'} (Dice {v.get('mask_dice', 0):.4f})"
            for k, v in record["backends"].items()), flush=True)
        _time_request(payloads, folder, record, "512x512 request (a model fitted here)",
                      "8 images", repeats)
    # The shipped model on real photos: exported on 16 jewellery-scenes photos as a user's
    # `seglab export jewellery-cutout` does, timed on 8 others it never saw.
    from seglab.data.images import list_images
    from seglab.models import zoo

    scenes = list_images(SHARED / "jewellery-scenes") if (SHARED / "jewellery-scenes").is_dir() \
        else []
    if "jewellery-cutout" not in zoo.names() or len(scenes) < 24:
        print("cutout   zoo jewellery-cutout: skipped (needs 24 jewellery-scenes photos)")
        return
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(zoo.resolve("jewellery-cutout"), Path(tmp) / "jc"))
        record = exporting.export(folder, samples=exporting.sample_inputs(folder, scenes[:16],
                                                                          count=16))
        payloads = [_png_bytes(read_image(p)) for p in scenes[16:24]]
        _time_request(payloads, folder, record, "zoo jewellery-cutout request, real photos",
                      "16 real photos", repeats)


def _time_request(payloads: list[bytes], folder: Path, record, case: str, seen: str,
                  repeats: int) -> None:
    """One cut-out request per payload: seglab with `auto`'s backend vs the plain baseline."""
    from seglab.cutout.remove import remove
    from seglab.data.images import encode_png, read_image
    from seglab.infer.predictor import load_model
    from seglab.models import folder as modelfolder

    best = load_model(folder, backend="auto")
    eager = load_model(folder, backend="torch")
    baseline = _PlainCutout(modelfolder.load_net(folder)[0].net, best.config)

    def request() -> None:
        for data in payloads:
            encode_png(remove(read_image(data), best).shown())

    def plain() -> None:
        for data in payloads:
            baseline(data)

    # Two comparisons, kept apart: the backend against seglab's own fp32 request (what
    # the export check vouches for), and seglab against the plain request, whose
    # verdicts differ for another reason: it interpolates probabilities, not logits, up
    # to the photo, which lowers the confidence along every edge
    # (seglab.infer.predictor._resize_probs).
    images = [read_image(d) for d in payloads]
    verdicts = [remove(image, best).decision.accepted for image in images]
    same = sum(v == remove(image, eager).decision.accepted
               for v, image in zip(verdicts, images, strict=True))
    plain_same = sum(v == baseline.accepted(d) for v, d in zip(verdicts, payloads, strict=True))
    base = len(payloads) / timed(plain, repeats)
    value = len(payloads) / timed(request, repeats)
    check = record["backends"][best.backend.name]
    report("cutout", f"{case}, eager fp32 vs {best.backend.name}", "img/s", base, value,
           f"mask Dice vs fp32 {check['mask_dice']:.4f} on {seen}; same gate verdict as "
           f"seglab in fp32 on {same}/{len(payloads)} photos (as the plain request, which "
           f"interpolates probabilities, on {plain_same}/{len(payloads)})")


class _PlainCutout:
    """The baseline request as people write it: Pillow decode, eager fp32 smp, probabilities
    resized to the photo, the same cleaning in OpenCV and NumPy, the gate in NumPy,
    Pillow's PNG at its default level. Written out here so that seglab's own speed-ups
    do not also speed up the baseline."""

    def __init__(self, net: torch.nn.Module, config) -> None:
        from seglab.recipes import CleaningSpec, GateSpec

        self.net = net.eval()
        self.size = tuple(config.input_size)
        self.mean = np.asarray(config.normalization.mean, np.float32) * 255
        self.std = np.asarray(config.normalization.std, np.float32) * 255
        self.cleaning = config.postprocess.cleaning or CleaningSpec()
        self.gate = config.gate or GateSpec()

    def _mask(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import cv2
        from PIL import Image

        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        small = cv2.resize(image, self.size[::-1], interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(((small.astype(np.float32) - self.mean) / self.std)
                             .transpose(2, 0, 1)[None].copy())
        with torch.inference_mode():
            logits = self.net(x)
        probs = cv2.resize(torch.sigmoid(logits[0, 0]).numpy(), image.shape[1::-1])
        return image, probs, self._clean((probs >= 0.5).astype(np.uint8))

    def _clean(self, mask: np.ndarray) -> np.ndarray:
        """Opening, then small components and small holes dropped by relabelling."""
        import cv2

        spec = self.cleaning
        size = (spec.open_kernel,) * 2
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN,
                                cv2.getStructuringElement(cv2.MORPH_ELLIPSE, size))
        for invert, fraction in ((False, spec.min_component_area),
                                 (True, spec.fill_holes_area)):
            m = 1 - mask if invert else mask
            _, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            keep = stats[:, cv2.CC_STAT_AREA] >= fraction * mask.size
            keep[0] = False
            m = keep[labels].astype(np.uint8)
            mask = 1 - m if invert else m
        return mask

    def accepted(self, data: bytes) -> bool:
        return self._verdict(*self._mask(data)[1:])

    def _verdict(self, probs: np.ndarray, mask: np.ndarray) -> bool:
        inside = mask.astype(bool)
        p = probs.astype(np.float64)
        conf = min(p[inside].mean(), 1 - p[~inside].mean()) if inside.any() else 0.0
        area = inside.mean()
        return bool(self.gate.min_area_fraction <= area <= self.gate.max_area_fraction
                    and conf >= self.gate.min_confidence)

    def __call__(self, data: bytes) -> bytes:
        from PIL import Image

        image, probs, mask = self._mask(data)
        shown = (np.dstack([image, (mask.astype(np.float32) * 255 + 0.5).astype(np.uint8)])
                 if self._verdict(probs, mask) else image)
        buf = io.BytesIO()
        Image.fromarray(shown).save(buf, format="PNG")
        return buf.getvalue()


def _cutouts(tmp: Path) -> Path:
    """Real RGBA cut-outs: ../shared's when it is there, else the package's sample photos
    (MIT-licensed, shipped with their masks) cut out into RGBA PNGs."""
    fg_dir = SHARED / "jewellery-cutouts"
    if fg_dir.is_dir():
        return fg_dir
    from PIL import Image

    from seglab.demo import samples_folder

    out = tmp / "cutouts"
    out.mkdir(parents=True, exist_ok=True)
    for image in sorted((samples_folder() / "jewellery" / "images").glob("*.jpg")):
        mask = Image.open(image.parent.parent / "masks" / f"{image.stem}.png").convert("L")
        rgba = Image.open(image).convert("RGB")
        rgba.putalpha(mask)
        rgba.save(out / f"{image.stem}.png")
    return out


def _fit_cutout(net: torch.nn.Module, recipe, config, tmp: Path, steps: int = 100
                ) -> np.ndarray:
    """Fit the cut-out U-Net to 8 composites so its masks are confident (as for the ResNet50).

    Trained at 256x256 for speed, then BatchNorm statistics are re-estimated at
    512x512, the size it runs at. Returns the 8 composites preprocessed at 512.
    """
    import cv2

    from seglab.data import cutouts, synth
    from seglab.infer.predictor import preprocess
    from seglab.recipes import SynthSpec

    spec = (recipe.data.synth or SynthSpec()).model_copy(update={"size": (256, 256)})
    fgs, _ = cutouts.load_foregrounds(_cutouts(tmp), spec)
    make = synth.Synthesizer(spec, fgs, seed=0)
    comps = [make(i) for i in range(8)]
    mean = np.asarray(config.normalization.mean, np.float32) * 255
    std = np.asarray(config.normalization.std, np.float32) * 255
    x = torch.from_numpy(np.stack([preprocess(c.image, (256, 256), mean, std) for c in comps]))
    y = torch.from_numpy(np.stack([c.mask for c in comps]))[:, None].float()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    net.train()
    for step in range(steps):
        part = slice((step % 2) * 4, (step % 2) * 4 + 4)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[part])[0], y[part])
        opt.zero_grad()
        loss.backward()
        opt.step()
    big = np.stack([preprocess(cv2.resize(c.image, (512, 512)), (512, 512), mean, std)
                    for c in comps])
    with torch.no_grad():  # PyTorch's BatchNorm re-estimation (cumulative average)
        torch.optim.swa_utils.update_bn([torch.from_numpy(big)], net)
    net.eval()
    print(f"cutout   fitted: BCE {loss.item():.4f} after {steps} steps", flush=True)
    return big


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _loop_encode(mask: np.ndarray) -> str:
    """The per-pixel Python loop people write to encode Severstal RLE (the baseline)."""
    pixels = mask.T.flatten()
    runs, start, prev = [], 0, 0
    for i, p in enumerate(pixels):
        if p and not prev:
            start = i + 1
        elif not p and prev:
            runs += [start, i + 1 - start]
        prev = p
    if prev:
        runs += [start, len(pixels) + 1 - start]
    return " ".join(map(str, runs))


def _pixel_loop_decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Decoding pixel by pixel, the loop people write first."""
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    parts = text.split()
    for start, length in zip(parts[0::2], parts[1::2], strict=True):
        for i in range(int(start) - 1, int(start) - 1 + int(length)):
            flat[i] = 1
    return flat.reshape(shape[1], shape[0]).T


def _loop_decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    """The per-run loop of the Kaggle kernels: one slice assignment per run."""
    parts = text.split()
    starts = np.asarray(parts[0::2], dtype=int) - 1
    lengths = np.asarray(parts[1::2], dtype=int)
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    for lo, n in zip(starts, lengths, strict=True):
        flat[lo:lo + n] = 1
    return flat.reshape(shape, order="F")


def bench_rle(repeats: int) -> None:
    """3. RLE encode and decode of 256x1600 masks."""
    import cv2

    from seglab.data import rle

    rng = np.random.default_rng(0)
    masks = []
    for _ in range(4):
        m = np.zeros((256, 1600), np.uint8)
        for _ in range(12):
            cv2.ellipse(m, (int(rng.integers(1600)), int(rng.integers(256))),
                        (int(rng.integers(10, 120)), int(rng.integers(5, 60))),
                        float(rng.integers(180)), 0, 360, 1, -1)
        masks.append(m)
    texts = [rle.encode(m) for m in masks]
    assert all(_loop_encode(m) == t for m, t in zip(masks, texts, strict=True))
    assert all((_loop_decode(t, m.shape) == m).all() and (rle.decode(t, m.shape) == m).all()
               for m, t in zip(masks, texts, strict=True))
    base = len(masks) / timed(lambda: [_loop_encode(m) for m in masks], repeats)
    value = len(masks) / timed(lambda: [rle.encode(m) for m in masks], max(repeats, 20))
    report("rle", "encode 256x1600 (vs per-pixel loop)", "masks/s", base, value)
    value = len(masks) / timed(lambda: [rle.decode(t, (256, 1600)) for t in texts],
                               max(repeats, 20))
    base = len(masks) / timed(lambda: [_pixel_loop_decode(t, (256, 1600)) for t in texts],
                              repeats)
    report("rle", "decode 256x1600 (vs per-pixel loop)", "masks/s", base, value)
    base = len(masks) / timed(lambda: [_loop_decode(t, (256, 1600)) for t in texts],
                              max(repeats, 20))
    report("rle", "decode 256x1600 (vs per-run slice loop)", "masks/s", base, value,
           "same algorithm; seglab also validates and returns a C-ordered array")


def bench_synth(repeats: int) -> None:
    """4. Composites/s at 512x512 vs the images/s a training step consumes, same cores."""
    from seglab.data import cutouts, synth
    from seglab.data.backgrounds import list_photos
    from seglab.recipes import load_recipe

    recipe = load_recipe("jewellery-unet-effb3", {"data": {"input_size": [512, 512]}})
    spec = recipe.data.synth or __import__("seglab.recipes", fromlist=["SynthSpec"]).SynthSpec()
    spec = spec.model_copy(update={"size": (512, 512)})
    with tempfile.TemporaryDirectory() as tmp:
        fgs, _ = cutouts.load_foregrounds(_cutouts(Path(tmp)), spec)
        rooms = list_photos([SHARED / "backgrounds" / "rooms"]) if SHARED.is_dir() else []
        hands = list_photos([SHARED / "backgrounds" / "hands"]) if SHARED.is_dir() else []
        s = synth.Synthesizer(spec, fgs, rooms, hands, seed=0)
        count = 48
        t = time.perf_counter()
        synth.generate(s, Path(tmp) / "out", count, workers=os.cpu_count() or 1,
                       progress=False)
        made = count / (time.perf_counter() - t)
    consumed = _train_rate(recipe, (512, 512), batch=4, steps=3, bf16=True)
    report("synth", "composites/s (written to disk) vs train img/s", "img/s", consumed, made,
           "baseline = images/s one bf16 training step of the effb3 U-Net consumes")


def _train_rate(recipe, size: tuple[int, int], batch: int, steps: int, bf16: bool) -> float:
    from seglab.models.network import build

    net = build(recipe.model).train()
    if bf16:
        net = net.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, *size)
    y = (torch.rand(batch, len(recipe.model.classes), *size) > 0.8).float()
    opt = torch.optim.Adam(net.parameters(), 1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x.contiguous(memory_format=torch.channels_last) if bf16 else x)[0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return batch / timed(step, steps)


def bench_train(repeats: int) -> None:
    """5. Training step throughput: plain smp + PyTorch loop vs seglab's Lightning trainer."""
    import lightning as L
    from torch.utils.data import DataLoader, Dataset

    from seglab.recipes import load_recipe
    from seglab.training.segmenter import Segmenter

    size, batch, steps = (128, 800), 4, 6
    recipe = load_recipe("severstal-unet-r50", {"model": {"encoder_weights": None,
                                                          "aux_head": False},
                                                "train": {"batch_size": batch}})
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.standard_normal((batch * 2, 3, *size)).astype(np.float32))
    masks = torch.from_numpy((rng.random((batch * 2, 4, *size)) > 0.9).astype(np.float32))

    class InMemory(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> dict:
            return {"image": images[i], "mask": masks[i], "labels": masks[i].amax((1, 2)),
                    "id": str(i)}

    def plain(bf16: bool) -> float:
        recipe_b = recipe.model_copy(deep=True)
        net = Segmenter(recipe_b).net.train()
        if bf16:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), 1e-4)
        loader = DataLoader(InMemory(), batch_size=batch, shuffle=True)
        stamps = []
        while len(stamps) < steps + 1:
            for b in loader:
                x = b["image"].contiguous(memory_format=torch.channels_last) if bf16 else b[
                    "image"]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = net(x)[0]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(),
                                                                            b["mask"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                stamps.append(time.perf_counter())
        return batch / statistics.median(np.diff(stamps[1:]))

    class Stamps(L.Callback):
        def __init__(self) -> None:
            self.t: list[float] = []

        def on_train_batch_end(self, *args: object) -> None:
            self.t.append(time.perf_counter())

    def seglab_trainer(bf16: bool) -> float:
        recipe_b = recipe.model_copy(deep=True)
        recipe_b.train.precision = "bf16-mixed" if bf16 else "32"
        recipe_b.train.channels_last = bf16
        stamps = Stamps()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = L.Trainer(max_steps=steps + 1, precision=recipe_b.train.precision,
                                accelerator="cpu", devices=1, callbacks=[stamps],
                                logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                limit_val_batches=0, default_root_dir=tmp)
            module = Segmenter(recipe_b)
            trainer.fit(module, DataLoader(InMemory(), batch_size=batch, shuffle=True))
        return batch / statistics.median(np.diff(stamps.t[1:]))

    fp32_loop = plain(False)
    report("train", "U-Net r50 128x800 b4: seglab trainer fp32 vs loop", "img/s", fp32_loop,
           seglab_trainer(False), "overhead target: ratio >= 0.95")
    report("train", "U-Net r50 128x800 b4: plain loop bf16 vs fp32", "img/s", fp32_loop,
           plain(True))
    report("train", "U-Net r50 128x800 b4: seglab trainer bf16 vs fp32 loop", "img/s",
           fp32_loop, seglab_trainer(True), "target: ratio >= 1.5")


BENCHES = {"unet": bench_unet, "cutout": bench_cutout, "zoo": bench_zoo, "rle": bench_rle,
           "synth": bench_synth, "train": bench_train}


TABLE_HEAD = ["| bench | case | unit | baseline | seglab | ratio | notes |",
              "|---|---|---|---:|---:|---:|---|"]


def cpu_kind() -> str:
    """This CPU as the section heading of RESULTS.md: model name and the features that
    decide which backend is fastest (bf16 and int8 kernels), as ``auto`` sees them."""
    from seglab.infer.runtimes import cpu_signature

    name, features, _threads = cpu_signature().split(" | ")
    return f"{name} ({features})"


def read_sections(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """RESULTS.md as {cpu kind: section lines} and the order they appear in. A file from
    before sections existed (one table, ``- Machine:`` line) becomes one section named by
    that line, so its rows are kept, never re-attributed to this CPU."""
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            order.append(current)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if not order and "| bench |" in text:  # the single-table layout
        machine = next((ln.split(":", 1)[1].split(",")[0].strip() for ln in text.splitlines()
                        if ln.startswith("- Machine:")), "an earlier machine")
        current = f"{machine} (features not recorded)"
        order, sections[current] = [current], ["", *text.splitlines()[2:]]
    return sections, order


def write_results(path: Path, started: str, benches: list[str]) -> None:
    """Rewrite this CPU kind's section of ``path``; the other kinds' sections stay as they
    are, and rows of benchmarks not run this time stay in this one."""
    import onnxruntime
    import segmentation_models_pytorch as smp

    try:
        import openvino

        ov = openvino.__version__
    except ImportError:  # pragma: no cover
        ov = "not installed"

    kind = cpu_kind()
    sections, order = read_sections(path.read_text(encoding="utf-8")) if path.exists() else (
        {}, [])
    kept = []
    for line in sections.get(kind, []):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in BENCHES and cells[0] not in benches:
            kept.append(line)
    sections[kind] = [
        "",
        f"Last run {started}: `python benchmarks/run.py {' '.join(sys.argv[1:])}` "
        f"({', '.join(benches)}; rows of other benchmarks are from earlier runs on this "
        "kind of CPU).", "",
        f"- Machine: {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"smp {smp.__version__}, onnxruntime {onnxruntime.__version__}, openvino {ov}",
        "- Every ratio is seglab / baseline, both measured in the same run.", "",
        *TABLE_HEAD, *kept,
        *(f"| {r['bench']} | {r['case']} | {r['unit']} | {r['baseline']:.2f} | "
          f"{r['seglab']:.2f} | {r['ratio']:.2f}x | {r['extra']} |" for r in rows), ""]
    if kind not in order:
        order.insert(0, kind)
    lines = ["# seglab benchmark results", "",
             "One section per kind of CPU (model name and the features that decide which "
             "backend is fastest); a run rewrites only its own CPU's section.", ""]
    for name in order:
        lines += [f"## {name}", *sections[name]]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", metavar="BENCH",
                        help=f"some of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    unknown = set(args.benches) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}")
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    chosen = args.benches or list(BENCHES)
    for name in chosen:
        print(f"== {name}: {BENCHES[name].__doc__.strip().splitlines()[0]}", flush=True)
        BENCHES[name](args.repeats)
        write_results(args.out, started, chosen)  # after each: a later crash loses nothing
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
