from __future__ import annotations

import io

import numpy as np
import pytest

from seglab.data import rle
from seglab.errors import CSVFormatError, RLEError


def test_decode_column_major_one_based():
    # 3x4 image; pixel 1 is (0,0), pixel 2 is (1,0), pixel 4 is (0,1).
    mask = rle.decode("2 3 9 1", shape=(3, 4))
    expected = np.zeros((3, 4), np.uint8)
    expected[1, 0] = expected[2, 0] = expected[0, 1] = 1  # pixels 2,3,4
    expected[2, 2] = 1  # pixel 9
    np.testing.assert_array_equal(mask, expected)
    assert rle.encode(mask) == "2 3 9 1"


def test_empty_and_full():
    assert rle.decode("", (4, 5)).sum() == 0
    assert rle.encode(np.zeros((4, 5), np.uint8)) == ""
    assert rle.encode(np.ones((4, 5), np.uint8)) == "1 20"
    assert rle.decode("1 20", (4, 5)).all()


def test_touching_runs_are_valid_and_merge_on_encode():
    mask = rle.decode("1 2 3 2", (2, 2))
    assert mask.all()
    assert rle.encode(mask) == "1 4"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1 2 3", "odd number of tokens (3)"),
        ("1 2 x 4", "token 'x' is not an integer"),
        ("1 2.5", "token '2.5' is not an integer"),
        ("0 3", "run 1 starts at 0"),
        ("-4 3", "run 1 starts at -4"),
        ("5 0", "run 1 has length 0"),
        ("5 -2", "run 1 has length -2"),
        ("18 4", "run 1 (18 4) ends at pixel 21, past the 4x5 image (20 pixels)"),
        ("10 2 3 2", "runs are not sorted: run 2 starts at 3, before run 1 at 10"),
        ("3 4 5 2", "run 2 (start 5) overlaps run 1 (3 4)"),
    ],
)
def test_malformed_rle_is_rejected_with_row_and_image(text, fragment):
    with pytest.raises(RLEError) as err:
        rle.decode(text, (4, 5), image_id="abc.jpg", row=7)
    message = str(err.value)
    assert fragment in message
    assert "row 7" in message and "image abc.jpg" in message
    assert err.value.image_id == "abc.jpg" and err.value.row == 7


def test_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((37, 53)) > rng.random()).astype(np.uint8)
        assert np.array_equal(rle.decode(rle.encode(mask), mask.shape), mask)


def test_csv_layouts_round_trip(tmp_path):
    rles = {"a.jpg": {1: "1 3", 3: "10 2"}, "b.jpg": {4: "5 5"}}
    for layout in ("combined", "split"):
        path = tmp_path / f"{layout}.csv"
        rle.write_csv(path, rles, layout=layout, images=["a.jpg", "b.jpg", "c.jpg"])
        labels = rle.read_csv(path, shape=(4, 5))
        assert labels.rles == rles
        assert labels.classes_of("a.jpg") == [1, 3] and labels.classes_of("c.jpg") == []
    combined = (tmp_path / "combined.csv").read_text().splitlines()
    assert combined[0] == "ImageId_ClassId,EncodedPixels"
    assert len(combined) == 1 + 3 * 4 and combined[-1] == "c.jpg_4,"
    split = (tmp_path / "split.csv").read_text().splitlines()
    assert split == ["ImageId,ClassId,EncodedPixels", "a.jpg,1,1 3", "a.jpg,3,10 2", "b.jpg,4,5 5"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Image,Class,EncodedPixels\n", "expected columns"),
        ("ImageId,ClassId\n", "missing column 'EncodedPixels'"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,1,5 2\n",
         "row 3: duplicate row for image a.jpg class 1"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,5,1 2\n", "row 2: unknown class id 5"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,one,1 2\n", "class id 'one' of image a.jpg"),
        ("ImageId_ClassId,EncodedPixels\nnounderscore,1 2\n", "has no '_<class>' suffix"),
    ],
)
def test_malformed_csv(text, fragment):
    with pytest.raises(CSVFormatError, match=None) as err:
        rle.read_csv(io.StringIO(text), shape=(4, 5))
    assert fragment in str(err.value)


def test_malformed_rle_in_csv_names_row_and_image():
    text = "ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\nb.jpg,2,1 2 3\n"
    with pytest.raises(RLEError) as err:
        rle.read_csv(io.StringIO(text), shape=(4, 5))
    assert err.value.row == 3 and err.value.image_id == "b.jpg"


def test_real_severstal_rows_round_trip_exactly(shared_data, tmp_path):
    """Every row of the real CSV decodes and re-encodes to the identical string."""
    import cv2

    from seglab.data.images import read_image, write_image

    folder = shared_data / "severstal-labelled"
    labels = rle.read_csv(folder / "train_subset.csv")
    rows = [(i, c, r) for i, cs in labels.rles.items() for c, r in cs.items()]
    assert len(rows) >= 5
    for image_id, _class_id, text in rows:
        mask = rle.decode(text, image_id=image_id)
        assert mask.shape == (256, 1600)
        assert rle.encode(mask) == text
    # The masks sit on visible defects: inside them the strip departs from its local
    # background (median filter) clearly more than elsewhere on the strip.
    for image_id in labels.rles:
        grey = read_image(folder / image_id, mode="L")
        deviation = np.abs(grey.astype(float) - cv2.medianBlur(grey, 31))
        union = labels.mask(image_id).any(axis=0)
        strip = grey > 20  # the black margin beside some strips is not steel
        assert deviation[union].mean() > 1.3 * deviation[strip & ~union].mean(), image_id
    # An overlay of one defective strip, checked by pixel counts.
    image_id = "002fc4e19.jpg"
    masks = labels.mask(image_id)
    overlay = read_image(folder / image_id).copy()
    overlay[masks[0] > 0] = (255, 0, 0)
    overlay[masks[1] > 0] = (0, 255, 0)
    write_image(tmp_path / "overlay.png", overlay)
    back = read_image(tmp_path / "overlay.png")
    red = np.all(back == (255, 0, 0), axis=2).sum()
    green = np.all(back == (0, 255, 0), axis=2).sum()
    # Class 1 and 2 overlap nowhere in this strip, so each colour counts its own pixels.
    assert int(masks[0].sum()) == sum(int(x) for x in labels.rles[image_id][1].split()[1::2])
    assert red == masks[0].sum() - (masks[0] & masks[1]).sum()
    assert green == masks[1].sum()
