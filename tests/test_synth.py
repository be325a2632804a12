"""What the composites teach beyond a pasted piece: reflections, camera tilts, pairs and
sets. Each is off by default and, when off, draws no random number, so the composites of
every earlier recipe stay as they were. Runs without the shared data (drawn pieces)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from seglab.data import synth
from seglab.data.cutouts import Foreground
from seglab.recipes import SynthSpec

# No rotation, flip, jitter, shadow or off-frame placement: what changes is what is tested.
PLAIN = SynthSpec(size=(96, 96), max_side=128, rotation=0.0, flip=0.0, off_frame=0.0,
                  jitter_brightness=0.0, jitter_contrast=0.0, jitter_saturation=0.0,
                  jitter_hue=0.0, shadow=0.0, area_fraction=(0.2, 0.2))


def _ring(colour: tuple[int, int, int], name: str) -> Foreground:
    """A square frame: opaque outside a square opening, like a pendant's setting."""
    rgba = np.zeros((60, 60, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = 255
    rgba[20:40, 20:40, 3] = 0
    return Foreground(name, rgba)


class _CountingRng:
    """A generator that counts its draws, to prove which draws a setting adds."""

    def __init__(self, seed, make=np.random.default_rng) -> None:
        self.rng, self.draws = make(seed), 0

    def __getattr__(self, name):
        def draw(*args, **kwargs):
            self.draws += 1
            return getattr(self.rng, name)(*args, **kwargs)
        return draw


def test_reflection_gives_bright_metal_the_scenes_colours():
    green = np.zeros((32, 32, 3), np.float32)
    green[..., 1] = 200
    white, dark = np.full((32, 32, 3), 255, np.uint8), np.full((32, 32, 3), 20, np.uint8)
    mirrored = synth._reflect(white, green, np.random.default_rng(0)).astype(int)
    # White metal takes 20-70% of the green scene: red and blue fall, green stays high.
    assert 255 * 0.3 - 1 <= mirrored[..., 0].min() == mirrored[..., 0].max() <= 255 * 0.8 + 1
    assert mirrored[..., 1].min() >= 216 and (mirrored[..., 0] == mirrored[..., 2]).all()
    # A dark stone reflects in proportion to its brightness: under 6% here.
    assert np.abs(synth._reflect(dark, green, np.random.default_rng(0)).astype(int) - 20
                  ).max() <= 11
    # The scene is mirrored top to bottom: a red sky above shows at the piece's bottom.
    scene = np.zeros((64, 64, 3), np.float32)
    scene[:32, :, 0] = 255
    lit = synth._reflect(np.full((64, 64, 3), 255, np.uint8), scene, np.random.default_rng(1))
    assert lit[-8:, :, 0].mean() > lit[:8, :, 0].mean() + 40


def test_reflection_off_draws_nothing_so_earlier_streams_stay_as_they_were(monkeypatch):
    calls = []
    real = synth._reflect
    monkeypatch.setattr(synth, "_reflect", lambda *a: calls.append(1) or real(*a))
    background = np.full((96, 96, 3), 90, np.uint8)
    draws, masks = {}, {}
    for share in (0.0, 1.0):
        rng = _CountingRng(5)
        _, alpha, params = synth.compose(rng, _ring((200, 200, 200), "ring"), background,
                                         PLAIN.model_copy(update={"reflection": share}))
        draws[share], masks[share] = rng.draws, alpha
        assert params.get("reflection", False) is (share == 1.0)
    # On: one draw to decide, one for the strength. Off: none, not even the decision.
    assert draws[1.0] - draws[0.0] == 2 and len(calls) == 1
    # Drawn after the placement: the same piece in the same place.
    assert np.array_equal(masks[0.0], masks[1.0]) and masks[0.0].any()


def _holes(mask: np.ndarray) -> int:
    """Openings: background regions that do not touch the border."""
    count, labels = cv2.connectedComponents((mask == 0).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0],
                                           labels[:, -1]])))
    return len(set(range(1, count)) - border)


def test_tilt_gives_the_piece_a_new_outline_and_keeps_its_opening():
    background = np.full((96, 96, 3), 90, np.uint8)
    piece = _ring((200, 200, 200), "ring")
    _, flat, _ = synth.compose(np.random.default_rng(2), piece, background, PLAIN)
    flat = flat > 127
    ys, xs = np.nonzero(flat)
    # Untilted, the frame fills its bounding box but for the opening (a ninth of it).
    assert flat[ys.min():ys.max() + 1, xs.min():xs.max() + 1].mean() == pytest.approx(8 / 9,
                                                                                      abs=0.03)
    fills = []
    for seed in range(6):
        _, alpha, params = synth.compose(np.random.default_rng(seed), piece, background,
                                         PLAIN.model_copy(update={"tilt": 1.0}))
        assert params["tilt"] is True and json.dumps(params)  # recorded in the manifest
        mask = alpha > 127
        ys, xs = np.nonzero(mask)
        fills.append(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].mean())
        # Scaled to the drawn area as before, and the opening is still an opening.
        assert mask.mean() == pytest.approx(0.2, abs=0.03) and _holes(mask) == 1
    # A quadrilateral that is no longer a rectangle leaves corners of its box empty.
    assert max(fills) < 0.85 and len({round(f, 3) for f in fills}) == len(fills)


def test_tilt_never_cuts_the_piece_off_at_its_canvas_edge():
    # A long piece (a bracelet) rotated on the canvas compose gives it: its ends reach the
    # canvas' edge, and corners moved outwards would cut them off without the padding.
    bar = np.zeros((40, 200, 4), np.uint8)
    bar[...] = (200, 200, 200, 255)
    side = int(np.ceil(np.hypot(*bar.shape[:2])))
    canvas = np.zeros((side, side, 4), np.uint8)
    canvas[(side - 40) // 2:(side - 40) // 2 + 40, (side - 200) // 2:(side - 200) // 2 + 200] = bar
    canvas = cv2.warpAffine(canvas, cv2.getRotationMatrix2D((side / 2, side / 2), 30, 1.0),
                            (side, side))
    corners = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
    for seed in range(20):
        out = synth._tilt(canvas, np.random.default_rng(seed))[..., 3]
        assert not (out[0].any() or out[-1].any() or out[:, 0].any() or out[:, -1].any())
        # Nothing lost: the same warp onto a canvas padded by a whole side holds as much.
        moved = corners + np.random.default_rng(seed).uniform(-0.12, 0.12, (4, 2)).astype(
            np.float32) * side
        roomy = np.array([[1, 0, side], [0, 1, side], [0, 0, 1]]) @ \
            cv2.getPerspectiveTransform(corners, moved)
        whole = cv2.warpPerspective(canvas[..., 3], roomy, (3 * side, 3 * side))
        assert out.astype(int).sum() == pytest.approx(whole.astype(int).sum(), rel=1e-3)


@pytest.mark.parametrize("key", ["tilt", "second_piece"])
def test_variety_off_draws_nothing_so_earlier_streams_stay_as_they_were(key, monkeypatch):
    real = np.random.default_rng
    made = []

    def counting(seed):
        made.append(_CountingRng(seed, real))
        return made[-1]

    monkeypatch.setattr(synth.np.random, "default_rng", counting)
    pieces = [_ring((200, 180, 40), "gold"), _ring((190, 190, 200), "silver")]
    draws, images = {}, {}
    # 1e-9: the decision is drawn but (all but surely) says no, so only that draw differs.
    for share in (0.0, 1e-9):
        maker = synth.Synthesizer(PLAIN.model_copy(update={key: share}), pieces, seed=11)
        comp = maker(0)
        draws[share], images[share] = made[-1].draws, comp.image
        assert "second_piece" not in comp.params and "tilt" not in comp.params
    monkeypatch.setattr(synth.np.random, "default_rng", real)
    assert draws[1e-9] - draws[0.0] == 1
    assert not np.array_equal(images[0.0], images[1e-9])  # the stream moved on by one draw


def test_second_piece_makes_pairs_and_sets_sharing_one_pieces_area():
    gold, silver = _ring((220, 170, 30), "gold"), _ring((150, 150, 255), "silver")
    spec = PLAIN.model_copy(update={"second_piece": 1.0, "area_fraction": (0.3, 0.3)})
    maker = synth.Synthesizer(spec, [gold, silver], seed=4)
    seen = set()
    for index in range(12):
        comp = maker(index)
        json.dumps(comp.params)  # written to the manifest as it is
        first, second = comp.params["foreground"], comp.params["second_piece"]["foreground"]
        seen.add("pair" if first == second else "set")
        # Each piece drawn at half the area: together no more than one would have had.
        assert 0.13 <= comp.mask.mean() <= 0.31
        assert comp.params["second_piece"]["target_area"] == pytest.approx(0.15)
        # The mask is the union of both alphas: the pixels of either colour are in it (a
        # background pixel may happen to share a colour), and they are nearly all of it.
        piece = (np.abs(comp.image.astype(int) - (220, 170, 30)).max(axis=2) < 8) | \
            (np.abs(comp.image.astype(int) - (150, 150, 255)).max(axis=2) < 8)
        assert comp.mask[piece].mean() > 0.999 and piece.sum() >= 0.9 * comp.mask.sum()
        if first != second:
            assert {"gold", "silver"} == {first, second}
    assert seen == {"pair", "set"}
    # Half pairs, half sets of two *different* pieces: drawing the second of a set from
    # all pieces would make three in four composites of two pieces pairs.
    pairs = [maker(i).params for i in range(12, 92)]
    share = np.mean([p["foreground"] == p["second_piece"]["foreground"] for p in pairs])
    assert 0.35 < share < 0.65


def test_measuring_puts_what_only_teaches_back_to_its_defaults():
    taught = SynthSpec(reflection=0.5, tilt=0.5, second_piece=0.3, jitter_saturation=0.4,
                       jitter_hue=0.1, jpeg=0.4, rotation=45.0)
    plain = taught.for_measuring()
    assert (plain.reflection, plain.tilt, plain.second_piece) == (0.0, 0.0, 0.0)
    assert (plain.jitter_saturation, plain.jitter_hue) == (0.2, 0.03)  # SynthSpec's defaults
    assert set(SynthSpec.TEACHING_ONLY) == {"reflection", "tilt", "second_piece",
                                            "jitter_brightness", "jitter_contrast",
                                            "jitter_saturation", "jitter_hue"}
    loud = SynthSpec(**{k: 0.45 for k in SynthSpec.TEACHING_ONLY}).for_measuring()
    assert all(getattr(loud, k) == SynthSpec.model_fields[k].default
               for k in SynthSpec.TEACHING_ONLY)
    # What the photos themselves look like, and how pieces lie in them, stays the recipe's.
    assert (plain.jpeg, plain.rotation) == (0.4, 45.0)
