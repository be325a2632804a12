from __future__ import annotations

import numpy as np
import pytest

from seglab.infer.gate import confidence, decide
from seglab.infer.postprocess import clean
from seglab.recipes import CleaningSpec, GateSpec

GATE = GateSpec()  # 5%-50% area, confidence 0.98


def _maps(area_px: int, p_in: float, p_out: float, size: int = 100):
    probs = np.full((size, size), p_out, np.float32)
    mask = np.zeros((size, size), np.uint8)
    side = int(np.sqrt(area_px))
    mask[:side, :side] = 1
    probs[mask > 0] = p_in
    return probs, mask


def test_confidence_formula():
    probs, mask = _maps(400, 0.99, 0.03)
    assert confidence(probs, mask) == pytest.approx(min(0.99, 1 - 0.03))  # 0.97
    probs, mask = _maps(400, 0.95, 0.001)
    assert confidence(probs, mask) == pytest.approx(0.95)
    assert confidence(probs, np.zeros_like(mask)) == 0.0


def test_each_gate_rule():
    accepted = decide(*_maps(2500, 0.995, 0.005), GATE)  # 25% area, confidence 0.995
    assert accepted.accepted and accepted.reason == ""
    assert accepted.area_fraction == pytest.approx(0.25)
    small = decide(*_maps(400, 0.999, 0.0), GATE)  # 4%
    assert not small.accepted and "4.0% of the image, below the 5% minimum" in small.reason
    large = decide(*_maps(5625, 0.999, 0.0), GATE)  # 56.25%
    assert not large.accepted and "above the 50% maximum" in large.reason
    unsure = decide(*_maps(2500, 0.97, 0.001), GATE)
    assert not unsure.accepted and unsure.reason == "confidence 0.970 is below 0.98"
    leaky = decide(*_maps(2500, 0.999, 0.03), GATE)  # outside probability too high
    assert not leaky.accepted and leaky.confidence == pytest.approx(0.97)
    edge = decide(*_maps(2500, 0.98, 0.0), GATE)  # exactly at the threshold: accepted
    assert edge.accepted
    loose = GateSpec(min_area_fraction=0.01, max_area_fraction=0.9, min_confidence=0.9)
    assert decide(*_maps(400, 0.95, 0.01), loose).accepted


def test_cleaning_removes_dot_and_line_keeps_object():
    mask = np.zeros((200, 200), np.uint8)
    mask[60:140, 50:130] = 1  # the object, 80x80
    mask[100, 150:195] = 1  # a one-pixel line
    mask[20, 20] = 1  # an isolated dot
    mask[95:98, 90:93] = 0  # a small hole inside the object
    out = clean(mask, CleaningSpec(open_kernel=3, min_component_area=0.001,
                                   fill_holes_area=0.001))
    assert out[100, 150:195].sum() == 0 and out[20, 20] == 0
    assert out[95:98, 90:93].all()
    assert out[60:140, 50:130].mean() > 0.99
    assert out.sum() == pytest.approx(80 * 80, rel=0.01)


def test_gate_reads_bool_and_strided_masks_like_uint8_ones():
    probs, mask = _maps(2500, 0.995, 0.005)
    reference = decide(probs, mask, GATE)
    for other in (mask.astype(bool), mask * 255, np.asfortranarray(mask)):
        assert decide(probs, other, GATE) == reference
    wide_p = np.repeat(probs, 2, axis=1)[:, ::2]  # strided views of the same maps
    wide_m = np.repeat(mask, 2, axis=1)[:, ::2]
    assert decide(wide_p, wide_m, GATE) == reference
