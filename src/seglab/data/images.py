"""Reading images into well-defined arrays, and writing them.

Images arrive in every mode Pillow knows (grayscale, palette, 16-bit, CMYK, RGBA,
EXIF-rotated). The rest of seglab only ever sees ``uint8`` arrays of shape
``(H, W, 3)`` (or ``(H, W, 4)`` when a caller asks for alpha), so every mode is
converted here, explicitly, once. Batches are decoded in worker processes.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Literal, TypeVar

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from seglab.data.files import write_bytes_atomic
from seglab.errors import ImageReadError, SeglabError
from seglab.results import FileError

# A truncated file must fail loudly, never decode into a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_PIXELS = 64_000_000
"""Decompression-bomb limit: a 20000x20000 PNG of a few KB would need 1.2 GB as RGB."""

PNG_COMPRESSION = 1
"""zlib level for the PNGs seglab writes. Masks and cut-outs are written on every
request, so speed wins; pass 9 for archives. With the settings in ``encode_png``
an 1100x1100 product photo encodes in 18 ms against Pillow's 78 ms at its
default level 6, for a file 4% larger (7% for an RGBA cut-out)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".avif", ".bmp", ".tif", ".tiff")

Source = str | os.PathLike[str] | bytes | IO[bytes]
T = TypeVar("T")
ColorMode = Literal["RGB", "RGBA", "L"]


def _describe(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<uploaded bytes>"


def _to_eight_bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float single-channel images to 8-bit 'L'."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        # Float images are taken to be in [0, 1] when they fit, else in [0, 255].
        scaled = arr * 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else arr
        out = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
    else:
        arr = arr.astype(np.int64)
        # 'I' holds 16-bit PNGs in older Pillow versions; anything beyond 16 bits is clipped.
        out = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Map every Pillow mode onto one of 'L', 'LA', 'RGB', 'RGBA'."""
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I") or mode == "F":
        return _to_eight_bit(img)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    if mode in ("RGBa", "La"):
        return img.convert("RGBA" if mode == "RGBa" else "LA")
    return img.convert("RGB")


def read_image(
    source: Source,
    mode: ColorMode = "RGB",
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    formats: Collection[str] | None = None,
) -> np.ndarray:
    """Read an image file (path, bytes or file object) into a ``uint8`` array.

    ``mode="RGB"`` gives ``(H, W, 3)``; an alpha channel is composited onto
    ``background`` because the colour under transparent pixels is undefined
    (often black garbage). ``mode="RGBA"`` gives ``(H, W, 4)`` with alpha kept
    (opaque images get alpha 255). ``mode="L"`` gives ``(H, W)``.
    EXIF orientation is applied. Any failure raises :class:`ImageReadError`
    naming the file and the problem. ``formats`` (Pillow names such as ``"JPEG"``)
    restricts what is accepted, checked on the content, never on the file name.
    """
    label = _describe(source, name)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageReadError(label, "file not found", "missing")
        if path.is_dir():
            raise ImageReadError(label, "is a directory, not an image file", "missing")
        if path.stat().st_size == 0:
            raise ImageReadError(label, "file is empty (0 bytes)", "empty")
        stream: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in finally
    elif isinstance(source, bytes):
        if not source:
            raise ImageReadError(label, "file is empty (0 bytes)", "empty")
        stream = io.BytesIO(source)
    else:
        stream = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(stream, formats=sorted(formats) if formats else None)
            except UnidentifiedImageError:
                accepted = f" (accepted: {', '.join(sorted(formats))})" if formats else ""
                raise ImageReadError(label, f"not a recognised image format{accepted}",
                                     "not_image") from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageReadError(
                    label, f"decompression-bomb guard: {exc} exceeds the pixel limit",
                    "too_large") from None
            except (OSError, SyntaxError, ValueError) as exc:
                raise ImageReadError(label, f"corrupt or truncated image data ({exc})") from None
            width, height = img.size
            if width * height > max_pixels:
                raise ImageReadError(
                    label,
                    f"decompression-bomb guard: {width}x{height} = {width * height} pixels "
                    f"exceeds the pixel limit of {max_pixels}",
                    "too_large",
                )
            if width < 1 or height < 1:
                raise ImageReadError(label, f"invalid size {width}x{height}")
            if img.format == "JPEG":
                _check_jpeg(stream, img.mode, label)
            try:
                img.load()
                img = ImageOps.exif_transpose(img)
            except (OSError, SyntaxError, ValueError) as exc:
                # Pillow reports truncation and corrupt streams as OSError/SyntaxError.
                raise ImageReadError(label, f"corrupt or truncated image data ({exc})") from None
            return from_pil(img, mode, background)
    finally:
        if isinstance(source, (str, os.PathLike)):
            stream.close()


def from_pil(img: Image.Image, mode: ColorMode = "RGB",
             background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A decoded PIL image as :func:`read_image` returns it (every mode mapped, alpha
    composited onto ``background`` for RGB), without encoding it to a file first."""
    return _convert(_normalise_mode(img), mode, background)


def _check_jpeg(stream: IO[bytes], pil_mode: str, label: str) -> None:
    """Refuse a JPEG whose data ends early or contradicts its header.

    libjpeg only *warns* when the entropy-coded data runs out (a header patched to
    6000x6000 over 16x16 of data) and fills the rest with grey, and Pillow passes the
    warning by, so such a file would get a verdict. libjpeg-turbo through simplejpeg
    with ``strict=True`` turns those warnings into errors; decoding at 1/8 scale (DCT
    scaling) still reads every coefficient, at a small cost.
    """
    import simplejpeg

    try:
        where = stream.tell()
        stream.seek(0)
        data = stream.read()
        stream.seek(where)
    except (OSError, ValueError):  # an unseekable stream: Pillow's checks alone
        return
    space = {"L": "GRAY", "CMYK": "CMYK"}.get(pil_mode, "RGB")
    try:
        simplejpeg.decode_jpeg(data, colorspace=space, strict=True, min_factor=8)
    except ValueError as exc:
        raise ImageReadError(label, f"corrupt or truncated JPEG data ({exc})") from None


def _convert(img: Image.Image, mode: ColorMode, background: tuple[int, int, int]) -> np.ndarray:
    if mode == "RGBA":
        return np.asarray(img.convert("RGBA"), dtype=np.uint8).copy()
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(base, rgba).convert("RGB")
    target = "L" if mode == "L" else "RGB"
    # np.array copies once into a writable array; converting an image already in the
    # target mode would copy it twice more.
    return np.array(img if img.mode == target else img.convert(target), dtype=np.uint8)


def list_images(*inputs: str | os.PathLike[str]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into a sorted list of image paths."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif any(ch in str(item) for ch in "*?["):
            anchor = Path(path.anchor) if path.is_absolute() else Path()
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else str(path)
            found.extend(sorted(p for p in anchor.glob(pattern) if p.is_file()))
        else:
            found.append(path)  # missing files are reported by read_image, not dropped here
    unique: dict[Path, None] = dict.fromkeys(found)
    return list(unique)


def is_url(item: str | os.PathLike[str]) -> bool:
    """``s3://...``, ``gs://...``, ``https://...``: read through fsspec, not as a local path."""
    text = str(item)
    return "://" in text and not text.startswith("file://")


def list_sources(*inputs: str | os.PathLike[str]) -> list[str]:
    """:func:`list_images` for local inputs, and fsspec URLs (a file, a prefix read as a
    folder, or a glob such as ``s3://bucket/strips/*.jpg``) listed through their
    filesystem, as strings, in order. Any fsspec protocol works whose driver is installed
    (``s3fs`` for ``s3://``)."""
    import fsspec

    found: list[str] = []
    for item in inputs:
        if not is_url(item):
            found.extend(str(p) for p in list_images(item))
            continue
        try:
            fs, path = fsspec.core.url_to_fs(str(item))
        except (ImportError, ValueError) as exc:
            raise SeglabError(f"cannot read {item}: {exc}") from exc
        if any(ch in path for ch in "*?["):
            names = sorted(fs.glob(path))
            if not names:
                raise SeglabError(f"no files match {item!r}")
        elif fs.isdir(path):
            names = sorted(n for n in fs.find(path) if n.lower().endswith(IMAGE_SUFFIXES))
            if not names:
                raise SeglabError(f"no images under {item}")
        else:
            names = [path]  # a missing object is reported by read_source, not dropped here
        found.extend(fs.unstrip_protocol(n) for n in names)
    return list(dict.fromkeys(found))


def read_source(source: str) -> np.ndarray:
    """:func:`read_image` for a local path or an fsspec URL (the bytes are fetched first)."""
    if not is_url(source):
        return read_image(source)
    import fsspec

    try:
        with fsspec.open(source, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageReadError(source, "file not found", "missing") from None
    except OSError as exc:
        raise ImageReadError(source, f"cannot be fetched: {exc}", "missing") from exc
    return read_image(data, name=source)


def check_inputs(*inputs: str | os.PathLike[str]) -> list[Path]:
    """``list_images``, refusing what can only be a user mistake before any work starts: a
    path that does not exist, a glob that matches nothing, a folder with no images, no
    input at all. (A file that exists but does not decode is reported and skipped later.)"""
    if not inputs:
        raise SeglabError("no images given")
    for item in inputs:
        text = str(item)
        if any(ch in text for ch in "*?[") and not Path(item).exists():
            if not list_images(item):
                raise SeglabError(f"no files match {text!r}")
        elif not Path(item).exists():
            raise SeglabError(f"no such file or folder: {text}")
        elif Path(item).is_dir() and not list_images(item):
            raise SeglabError(f"no images in folder {text} (looked for "
                                 f"{', '.join(IMAGE_SUFFIXES)})")
    return list_images(*inputs)


def _read_for_batch(path: Path) -> tuple[Path, np.ndarray | None, str | None]:
    try:
        return path, read_image(path), None
    except ImageReadError as exc:
        return path, None, str(exc)


def iter_images(paths: Iterable[Path], workers: int = 0, prefetch: int = 16
                ) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """Decode images in order, ``(path, image, None)`` or ``(path, None, error)`` each.

    With ``workers > 0`` decoding runs in that many processes, at most
    ``prefetch`` images ahead of the consumer, so memory stays bounded however
    long the list is and decoding overlaps the model. A bad file is an error
    entry, never an exception: the batch goes on.
    """
    if workers <= 0:
        for path in paths:
            yield _read_for_batch(Path(path))
        return
    import collections
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Decoders start from a clean fork server, not a fork of this process: by now this
    # process may run OpenVINO's or ONNX Runtime's thread pools, and forking a process
    # with live threads can crash (a seglab test did, after an OpenVINO export).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["seglab.data.images"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: collections.deque = collections.deque()
        for path in paths:
            pending.append(pool.submit(_read_for_batch, Path(path)))
            if len(pending) >= max(1, prefetch):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def image_batches(paths: Sequence[Path], batch_size: int, errors: list[FileError], *,
                  workers: int = 0, report: Callable[[str], None] = print
                  ) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Batches of decoded ``(path, image)`` for batch jobs; unreadable files go to ``errors``.

    Each bad file is appended as a ``FileError`` and reported, and the batch
    goes on without it (a batch may come out shorter, or empty).
    """
    for chunk in batched(iter_images(paths, workers=workers, prefetch=4 * batch_size),
                         batch_size):
        for path, _, err in chunk:
            if err is not None:
                errors.append(FileError(image=str(path), error=err))
                report(f"skipped: {err}")
        yield [(path, img) for path, img, _ in chunk if img is not None]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_png(array: np.ndarray, compression: int = PNG_COMPRESSION) -> bytes:
    """Encode an ``(H, W)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array as PNG.

    OpenCV's libpng with one fixed row filter ("up") and the run-length zlib
    strategy: libpng's default tries every filter on every row, which took 60% of
    the encoding time and saved only a few percent of the size.
    """
    array = np.ascontiguousarray(array)
    if array.ndim == 3:  # OpenCV stores colour as BGR(A)
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(array, code)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, compression,
                                           cv2.IMWRITE_PNG_STRATEGY,
                                           cv2.IMWRITE_PNG_STRATEGY_RLE,
                                           cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP])
    if not ok:  # pragma: no cover - OpenCV refuses only shapes checked above
        raise ValueError(f"cannot encode an array of shape {array.shape} as PNG")
    return buf.tobytes()


def write_image(path: str | os.PathLike[str], array: np.ndarray, quality: int = 95,
                compression: int = PNG_COMPRESSION) -> None:
    """Write an image atomically; the format follows the suffix (PNG, JPEG, WebP)."""
    target = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(target.suffix.lower(), "PNG")
    if fmt == "PNG":
        write_bytes_atomic(target, encode_png(array, compression))
        return
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(array))
    if fmt == "JPEG" and img.mode == "RGBA":
        img = img.convert("RGB")
    img.save(buf, format=fmt, quality=quality)
    write_bytes_atomic(target, buf.getvalue())

