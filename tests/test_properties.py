"""Property-based tests (hypothesis): RLE round trips, image decoding never crashes, the gate."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from seglab.data import rle
from seglab.data.images import read_image
from seglab.errors import ImageReadError, RLEError
from seglab.infer.gate import confidence, decide
from seglab.recipes import GateSpec

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 60)),
              elements=st.integers(0, 1)))
def test_rle_round_trip_for_any_mask(mask):
    text = rle.encode(mask)
    assert np.array_equal(rle.decode(text, mask.shape), mask)
    runs = list(map(int, text.split()))
    starts, lengths = runs[0::2], runs[1::2]
    assert all(n > 0 for n in lengths)  # no empty runs
    assert all(s2 > s1 + n1 for s1, n1, s2 in zip(starts[:-1], lengths[:-1], starts[1:],
                                                  strict=True))  # disjoint, in order
    assert sum(lengths) == int(mask.sum())


@FAST
@given(st.text(alphabet="0123456789 -x\n", max_size=40))
def test_malformed_rle_raises_a_clear_error_or_decodes(text):
    try:
        mask = rle.decode(text, (8, 8))
    except RLEError as exc:
        assert str(exc).startswith("malformed RLE")
    else:
        assert mask.shape == (8, 8) and set(np.unique(mask)) <= {0, 1}


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        image = read_image(data, name="upload")
    except ImageReadError as exc:
        assert "upload" in str(exc) and exc.kind in ImageReadError.KINDS
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@FAST
@given(st.sampled_from(["L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "1"]),
       st.integers(1, 30), st.integers(1, 30), st.sampled_from(["PNG", "TIFF", "WEBP"]),
       st.integers(0, 64))
def test_every_mode_decodes_to_rgb_and_any_truncation_is_a_clear_error(mode, w, h, fmt, cut):
    img = Image.new(mode, (w, h))
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # this format cannot store this mode: nothing to read
    data = buf.getvalue()
    arr = read_image(data)
    assert arr.shape == (h, w, 3) and arr.dtype == np.uint8
    if cut and cut < len(data):
        try:
            read_image(data[:-cut])
        except ImageReadError as exc:
            assert exc.kind in ("corrupt", "not_image", "empty")


@FAST
@given(arrays(np.float32, st.tuples(st.integers(2, 24), st.integers(2, 24)),
              elements=st.floats(0, 1, width=32)),
       st.floats(0, 0.5), st.floats(0.5, 1), st.floats(0, 1))
def test_gate_accepts_exactly_when_all_three_rules_hold(probs, lo, hi, min_conf):
    spec = GateSpec(min_area_fraction=lo, max_area_fraction=hi, min_confidence=min_conf)
    mask = (probs >= 0.5).astype(np.uint8)
    d = decide(probs, mask, spec)
    area = float(mask.mean())
    conf = confidence(probs, mask)
    assert d.area_fraction == pytest.approx(area, abs=1e-5)
    assert 0.0 <= d.confidence <= 1.0 and d.confidence == pytest.approx(conf, abs=1e-5)
    assert d.accepted == (lo <= area <= hi and conf >= min_conf)
    assert (d.reason == "") == d.accepted


@FAST
@given(arrays(np.float32, st.tuples(st.integers(1, 30), st.integers(1, 30)),
              elements=st.floats(0, 1, width=32)), st.floats(0, 1))
def test_confidence_equals_its_numpy_definition(probs, cut):
    mask = probs >= cut
    p = probs.astype(np.float64)
    expected = (min(p[mask].mean(), 1 - (p[~mask].mean() if (~mask).any() else 0.0))
                if mask.any() else 0.0)
    assert confidence(probs, mask.astype(np.uint8)) == pytest.approx(expected, abs=1e-6)


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)),
              elements=st.integers(0, 1)), st.integers(1, 40))
def test_dropping_small_components_equals_relabelling(mask, min_pixels):
    """The bounding-box fast path erases exactly the components a full relabel drops."""
    import cv2

    from seglab.infer.postprocess import _drop_small

    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False
    assert np.array_equal(_drop_small(mask, min_pixels), keep[labels].astype(np.uint8))


@FAST
@given(st.sampled_from([(), (3,), (4,)]), st.integers(1, 30), st.integers(1, 30),
       st.integers(0, 9), st.data())
def test_png_encoding_is_lossless_in_every_layout(channels, h, w, level, data):
    from seglab.data.images import encode_png

    array = data.draw(arrays(np.uint8, (h, w, *channels)))
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(array, level))))
    assert np.array_equal(decoded, array)  # RGB(A) order kept, nothing lost
