from __future__ import annotations

import numpy as np
import pytest

from seglab.defects.evaluate import Collected, score, tune
from seglab.metrics import detection_scores, dice_pairs, roc_auc
from seglab.recipes import PostprocessSpec, TuneSpec


def _m(*rows):
    return np.array(rows, dtype=np.uint8)


def test_dice_hand_computed_cases():
    empty = np.zeros((1, 1, 2, 3), np.uint8)
    full = np.ones((1, 1, 2, 3), np.uint8)
    assert dice_pairs(empty, empty).item() == 1.0  # empty vs empty scores 1
    assert dice_pairs(empty, full).item() == 0.0  # empty vs non-empty scores 0
    assert dice_pairs(full, empty).item() == 0.0
    a = _m([1, 1, 0], [0, 0, 0])[None, None]
    b = _m([0, 1, 1], [0, 1, 0])[None, None]
    # |A|=2, |B|=3, |A∩B|=1 -> 2*1/5
    assert dice_pairs(a, b).item() == pytest.approx(0.4)
    # The mission's smoothed coefficient (2*1+1)/(5+1)
    assert dice_pairs(a, b, smooth=1.0).item() == pytest.approx(0.5)
    assert dice_pairs(empty, empty, smooth=1.0).item() == 1.0
    batch = np.concatenate([a, b, empty[0:1]], axis=1)  # (1, 3, H, W)
    truth = np.concatenate([b, b, full[0:1]], axis=1)
    np.testing.assert_allclose(dice_pairs(batch, truth).numpy(), [[0.4, 1.0, 0.0]])


def test_detection_scores_and_auc():
    s = detection_scores([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 1, 1)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.1, 0.2]), np.array([1, 1])) is None


def _collected(thresholds, pred_area, inter, truth_area, class_probs):
    pred_area = np.asarray(pred_area, float)
    n = pred_area.shape[1]
    return Collected(ids=[f"i{k}" for k in range(n)], class_names=["c"],
                     thresholds=np.asarray(thresholds, np.float32), pred_area=pred_area,
                     inter=np.asarray(inter, float), truth_area=np.asarray(truth_area, float),
                     class_probs=np.asarray(class_probs, float),
                     dice=np.zeros((n, 1)), pred_present=np.zeros((n, 1), bool),
                     pixels=np.full(n, 100))


def test_tuning_finds_the_known_optimum():
    # Four images, one class, two thresholds. Image 0: a real defect of 50 px that
    # threshold 0.3 over-segments (150 px) and 0.7 fits (40 px, all inside).
    # Images 1-3: clean, but threshold 0.3 leaves 10-30 px of noise; at 0.7 only image 3
    # keeps its 30 px, and its classifier score is high, so only a minimum area removes it.
    thresholds = [0.3, 0.7]
    pred_area = [[[150], [10], [20], [30]], [[40], [0], [0], [30]]]
    inter = [[[50], [0], [0], [0]], [[40], [0], [0], [0]]]
    truth = [[50], [0], [0], [0]]
    probs = [[0.9], [0.2], [0.3], [0.8]]
    col = _collected(thresholds, pred_area, inter, truth, probs)
    grid = TuneSpec(thresholds=[0.3, 0.7], min_areas=[0, 25, 35, 45],
                    classifier_thresholds=[0.0, 0.5])
    spec, report = tune(col, grid, PostprocessSpec())
    # Best: threshold 0.7 (defect Dice 2*40/90), min area 35 kills image 3's 30 px noise.
    assert spec.threshold == [pytest.approx(0.7)] and spec.min_area == [35]
    assert spec.classifier_threshold == [0.0]
    expected = (2 * 40 / 90 + 1 + 1 + 1) / 4
    assert report["c"]["mean_dice"] == pytest.approx(expected, abs=1e-5)
    assert score(col, spec)["mean_dice"] == pytest.approx(expected)
    # Without the area grid the classifier threshold 0.5 does nothing for image 3
    # (score 0.8), so the best is to keep everything at 0.7 and lose image 3.
    grid2 = TuneSpec(thresholds=[0.3, 0.7], min_areas=[0], classifier_thresholds=[0.0, 0.5])
    spec2, report2 = tune(col, grid2, PostprocessSpec())
    assert spec2.threshold == [pytest.approx(0.7)] and spec2.min_area == [0]
    assert report2["c"]["mean_dice"] == pytest.approx((2 * 40 / 90 + 1 + 1 + 0) / 4, abs=1e-5)
    # A classifier threshold between image 3 (0.8) and image 0 (0.9) also reaches the optimum.
    grid3 = TuneSpec(thresholds=[0.3, 0.7], min_areas=[0], classifier_thresholds=[0.0, 0.85])
    spec3, report3 = tune(col, grid3, PostprocessSpec())
    assert spec3.classifier_threshold == [0.85] and spec3.min_area == [0]
    assert report3["c"]["mean_dice"] == pytest.approx(expected, abs=1e-5)


def test_score_reports_empty_baseline_and_defective_dice():
    col = _collected([0.5], [[[40], [0], [5]]], [[[40], [0], [0]]], [[50], [0], [0]],
                     [[0.9], [0.1], [0.7]])
    m = score(col, PostprocessSpec())
    assert m["all_empty_mean_dice"] == pytest.approx(2 / 3)
    assert m["mean_dice"] == pytest.approx((80 / 90 + 1 + 0) / 3)
    assert m["mean_dice_defective"] == pytest.approx(80 / 90)
    det = m["per_class"]["c"]["detection"]
    assert (det["tp"], det["fp"], det["fn"], det["tn"]) == (1, 1, 0, 1)


def test_pooled_iou_sums_pixels_over_images_after_post_processing():
    from seglab.defects.evaluate import pooled_iou

    # Same four images as the tuning test. At threshold 0.7 with min area 35, image 3's
    # 30 px of noise is dropped: intersection 40, union 40 + 50 - 40 = 50 -> IoU 0.8.
    col = _collected([0.3, 0.7], [[[150], [10], [20], [30]], [[40], [0], [0], [30]]],
                     [[[50], [0], [0], [0]], [[40], [0], [0], [0]]],
                     [[50], [0], [0], [0]], [[0.9], [0.2], [0.3], [0.8]])
    spec = PostprocessSpec(threshold=0.7, min_area=35, classifier_threshold=0.0)
    assert pooled_iou(col, spec) == {"c": pytest.approx(0.8)}
    # Without the minimum area the noise joins the union: 40 / (70 + 50 - 40) = 0.5.
    loose = PostprocessSpec(threshold=0.7, min_area=0, classifier_threshold=0.0)
    assert pooled_iou(col, loose)["c"] == pytest.approx(0.5)
    assert score(col, loose)["mean_iou"] == pytest.approx(0.5)
    # Nothing predicted and nothing true: undefined, not perfect.
    empty = _collected([0.5], [[[0]]], [[[0]]], [[0]], [[0.1]])
    assert pooled_iou(empty, PostprocessSpec(threshold=0.5))["c"] is None


def test_explain_says_which_rule_kept_or_dropped_each_class():
    from seglab.infer.postprocess import binarize, explain
    from seglab.recipes import PostprocessSpec

    probs = np.zeros((3, 20, 20), np.float32)
    probs[0, :10] = 0.9   # 200 px: kept, head not used (threshold 0)
    probs[1, :2] = 0.9    # 40 px: under the 64 px minimum
    probs[2, :10] = 0.9   # 200 px but the head says 0.2 < 0.5
    spec = PostprocessSpec(threshold=0.5, min_area=[0, 64, 0],
                           classifier_threshold=[0.0, 0.0, 0.5])
    heads = np.array([0.1, 0.9, 0.2])
    masks = binarize(probs, heads, spec)
    why = explain(probs, heads, masks, spec, ["a", "b", "c"])
    assert why[0] == "a: found (200 px at p >= 0.50, minimum 1 px; head not used)"
    assert why[1] == "b: not found (40 px at p >= 0.50, under the 64 px minimum)"
    assert why[2] == "c: dropped by the image-level head (0.20 < 0.50; 200 px at p >= 0.50)"


def test_overlay_legend_names_each_class_found_with_its_colour_and_area():
    from seglab.infer.overlay import color_of, overlay

    image = np.full((40, 400, 3), 128, np.uint8)
    masks = np.zeros((3, 40, 400), np.uint8)
    masks[1, :, :40] = 1  # 10% of the image
    out = overlay(image, masks, names=["inclusion", "patches", "scratches"])
    assert out.shape[1] == 400 and out.shape[0] > 40  # a band under the strip, not over it
    assert (out[:40, 100:] == 128).all()  # the photo itself is untouched outside the mask
    band = out[40:]
    swatch = np.all(band == color_of(1), axis=2)
    assert swatch.sum() >= 100  # the class's colour box
    assert not np.all(band == color_of(0), axis=2).any()  # absent classes get no entry
    plain = overlay(image, masks)
    assert plain.shape == image.shape  # without names: the overlay alone, as before
    empty = overlay(image, np.zeros_like(masks), names=["a", "b", "c"])
    assert empty.shape[0] > 40 and (empty[40:] < 128).any()  # "no defect found" is written
