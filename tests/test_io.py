from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.files import atomic_write
from seglab.data.images import list_images, read_image
from seglab.errors import ImageReadError


def _save(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_formats_decode_to_uint8_rgb(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for fmt, ext in [("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")]:
        path = tmp_path / f"x.{ext}"
        Image.fromarray(arr).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        out = read_image(path)
        assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
        np.testing.assert_array_equal(out, arr)
    Image.fromarray(arr).save(tmp_path / "x.jpg", quality=95)
    assert read_image(tmp_path / "x.jpg").shape == (20, 30, 3)


def test_grayscale_is_replicated():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(_save(Image.fromarray(grey, "L")))
    assert out.shape == (3, 4, 3)
    assert (out == grey[..., None]).all()
    assert np.array_equal(read_image(_save(Image.fromarray(grey, "L")), mode="L"), grey)


def test_sixteen_bit_is_scaled_to_eight():
    values = np.array([[0, 256, 65535], [32768, 512, 1000]], dtype=np.uint16)
    data = _save(Image.fromarray(values))  # I;16 PNG
    out = read_image(data, mode="L")
    np.testing.assert_array_equal(out, values >> 8)
    assert read_image(data).shape == (2, 3, 3)


def test_palette_without_and_with_transparency():
    pal = Image.new("P", (4, 2))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    out = read_image(_save(pal))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 1]) == (0, 0, 255)
    pal.info["transparency"] = 1
    rgba = read_image(_save(pal, transparency=1), mode="RGBA")
    assert rgba[0, 1, 3] == 0 and rgba[0, 0, 3] == 255
    # Transparent pixels composite onto white when RGB is asked for.
    assert tuple(read_image(_save(pal, transparency=1))[0, 1]) == (255, 255, 255)


def test_rgba_kept_when_asked_and_composited_otherwise():
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (10, 20, 30, 255)
    arr[0, 1] = (200, 0, 0, 0)
    arr[1, 0] = (0, 0, 0, 128)
    data = _save(Image.fromarray(arr, "RGBA"))
    np.testing.assert_array_equal(read_image(data, mode="RGBA"), arr)
    rgb = read_image(data)
    assert tuple(rgb[0, 0]) == (10, 20, 30)
    assert tuple(rgb[0, 1]) == (255, 255, 255)
    assert tuple(rgb[1, 0]) == (127, 127, 127)
    black = read_image(data, background=(0, 0, 0))
    assert tuple(black[0, 1]) == (0, 0, 0)
    # An opaque image asked for as RGBA gets alpha 255.
    assert (read_image(_save(Image.new("RGB", (3, 3))), mode="RGBA")[..., 3] == 255).all()


def test_cmyk_and_one_bit():
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red in CMYK
    out = read_image(_save(cmyk, "JPEG", quality=100))
    assert out[0, 0, 0] > 240 and out[0, 0, 1] < 15 and out[0, 0, 2] < 15
    bw = Image.new("1", (3, 1))
    bw.putpixel((2, 0), 1)
    assert read_image(_save(bw), mode="L").tolist() == [[0, 0, 255]]


def test_exif_orientation_is_applied():
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :5] = 255  # white band on the left of a 20-wide, 10-high image
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = read_image(_save(img, "JPEG", exif=exif.tobytes(), quality=100))
    assert out.shape == (20, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # left band is now on top


def test_truncated_and_non_image_files_raise_one_clear_error(tmp_path):
    good = _save(Image.fromarray(np.full((64, 64, 3), 120, np.uint8)), "JPEG")
    cases = {
        "truncated.jpg": good[: len(good) // 2],
        "text.jpg": b"hello, I am not a picture\n",
        "page.jpg": b"<!doctype html><html><body>404</body></html>",
        "empty.png": b"",
    }
    expected = {
        "truncated.jpg": "corrupt or truncated",
        "text.jpg": "not a recognised image format",
        "page.jpg": "not a recognised image format",
        "empty.png": "file is empty (0 bytes)",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError) as err:
            read_image(tmp_path / name)
        assert name in str(err.value) and expected[name] in str(err.value)
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _save(Image.new("L", (20000, 20000)))
    assert len(bomb) < 1_000_000
    pattern = r"decompression-bomb guard: .*400000000 pixels.* exceeds the pixel limit"
    with pytest.raises(ImageReadError, match=pattern):
        read_image(bomb, name="bomb.png")
    assert read_image(_save(Image.new("L", (100, 100))), max_pixels=10_000).shape == (100, 100, 3)
    too_many = "100x100 = 10000 pixels exceeds the pixel limit of 9999"
    with pytest.raises(ImageReadError, match=too_many):
        read_image(_save(Image.new("L", (100, 100))), max_pixels=9999)


def test_one_pixel_image():
    assert read_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)))).tolist() == [[[1, 2, 3]]]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_list_images_expands_folders_and_globs(tmp_path):
    for name in ("a.png", "b.jpg", "sub/c.webp", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = list_images(tmp_path)
    assert [p.name for p in found] == ["a.png", "b.jpg", "c.webp"]
    assert [p.name for p in list_images(str(tmp_path / "*.jpg"))] == ["b.jpg"]
    assert list_images(tmp_path / "missing.png") == [tmp_path / "missing.png"]


@pytest.mark.parametrize("workers", [0, 1])
def test_iter_images_reads_a_bounded_distance_ahead_and_keeps_order(tmp_path, workers):
    """Memory stays bounded for any folder: decoding never runs more than `prefetch`
    images ahead of the consumer, and a bad file is an entry in its place."""
    from seglab.data.images import iter_images

    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        if i == 5:
            p.write_bytes(b"not an image")
        else:
            Image.fromarray(np.full((4, 6, 3), i, np.uint8)).save(p)
        paths.append(p)
    pulled = 0

    def feed():
        nonlocal pulled
        for p in paths:
            pulled += 1
            yield p

    seen = []
    for consumed, (path, image, error) in enumerate(iter_images(feed(), workers=workers,
                                                                prefetch=3), start=1):
        # With workers, at most prefetch-1 paths are in flight beyond the one just yielded.
        assert (pulled - consumed <= 2) if workers else (pulled == consumed)
        seen.append(path)
        if path.name == "05.png":
            assert image is None and "05.png" in error
        else:
            assert error is None and image.shape == (4, 6, 3)
            assert int(image[0, 0, 0]) == int(path.stem)
    assert seen == paths


def test_output_names_keep_same_named_files_from_different_folders_apart():
    from seglab.data.files import output_names

    paths = [Path("shop-a/1.png"), Path("shop-b/1.png"), Path("shop-a/ring.jpg"),
             Path("x/shop-c/2.png"), Path("y/shop-c/2.png")]
    names = output_names(paths)
    assert names[Path("shop-a/ring.jpg")] == "ring"  # unique stems stay as they are
    assert names[Path("shop-a/1.png")] == "shop-a__1"
    assert names[Path("shop-b/1.png")] == "shop-b__1"
    assert names[Path("x/shop-c/2.png")] == "x__shop-c__2"
    assert len(set(names.values())) == len(paths)
    # Same stem, different suffix in one folder: still distinct.
    pair = output_names([Path("a/1.png"), Path("a/1.jpg")])
    assert len(set(pair.values())) == 2


def test_avif_photos_are_read_and_listed(tmp_path):
    # Marketplaces serve AVIF; six of the real jewellery scenes are AVIF files.
    arr = np.zeros((24, 32, 3), np.uint8)
    arr[:, 16:] = (200, 40, 40)
    Image.fromarray(arr).save(tmp_path / "x.avif", quality=90)
    out = read_image(tmp_path / "x.avif")
    assert out.shape == (24, 32, 3) and abs(int(out[12, 24, 0]) - 200) < 20
    assert list_images(tmp_path) == [tmp_path / "x.avif"]


def header_patched_jpeg(width: int = 6000, height: int = 6000) -> bytes:
    """A 16x16 JPEG whose frame header claims ``width`` x ``height``: libjpeg fills the
    missing blocks with grey and only warns, so a lenient reader returns an image."""
    import struct

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)).save(
        buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_jpeg_whose_data_ends_before_its_header_says_is_corrupt(tmp_path):
    with pytest.raises(ImageReadError, match=r"corrupt or truncated JPEG data.*premature end"):
        read_image(header_patched_jpeg())
    path = tmp_path / "patched.jpg"
    path.write_bytes(header_patched_jpeg(64, 64))
    with pytest.raises(ImageReadError, match=r"patched\.jpg: corrupt or truncated JPEG"):
        read_image(path)
    good = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(good, "JPEG")  # greyscale is fine
    assert read_image(good.getvalue()).shape == (64, 64, 3)
    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 32), (0, 50, 100, 0)).save(cmyk, "JPEG")
    assert read_image(cmyk.getvalue()).shape == (32, 32, 3)


def test_url_inputs_are_listed_and_read_through_fsspec(tmp_path):
    """What --engine ray does with s3:// (here fsspec's in-memory store, the same code path):
    a prefix read as a folder, a glob, one object; a missing or corrupt object is a clear
    ImageReadError, never a crash."""
    import fsspec

    from seglab.data.images import encode_png, list_sources, read_source
    from seglab.errors import ImageReadError, SeglabError

    fs = fsspec.filesystem("memory")
    strip = np.zeros((8, 20, 3), np.uint8)
    strip[:, 10:] = 200
    for name in ("line-3/a.png", "line-3/b.png", "line-3/sub/c.png", "line-3/notes.txt"):
        fs.pipe_file(f"/seglab-io/{name}", encode_png(strip) if name.endswith(".png") else b"x")
    fs.pipe_file("/seglab-io/line-3/broken.png", b"\x89PNG not really")
    folder = list_sources("memory://seglab-io/line-3")
    assert [s.rsplit("/", 1)[-1] for s in folder] == ["a.png", "b.png", "broken.png", "c.png"]
    listed = list_sources("memory://seglab-io/line-3/*.png", str(tmp_path / "x.png"))
    assert listed == [fs.unstrip_protocol(f"/seglab-io/line-3/{n}")
                      for n in ("a.png", "b.png", "broken.png")] + [str(tmp_path / "x.png")]
    assert all(s.startswith("memory://") for s in listed[:3])
    assert np.array_equal(read_source("memory://seglab-io/line-3/sub/c.png"), strip)
    with pytest.raises(ImageReadError, match="not found"):
        read_source("memory://seglab-io/line-3/gone.png")
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        read_source("memory://seglab-io/line-3/broken.png")
    with pytest.raises(SeglabError, match="no files match"):
        list_sources("memory://seglab-io/line-9/*.jpg")
