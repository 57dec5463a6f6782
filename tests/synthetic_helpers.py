"""Shared pieces of the tests of tools/make_synthetic.py."""

from __future__ import annotations

import json

import cv2
import numpy as np

from tools import make_synthetic as ms
from utils.regions import decode_regions

RES = 64
HEAD_BGR = (255, 0, 0)  # parsing colours as cv2 reads them (BGR)
WHITE = (255, 255, 255)


def make_small_dataset(tmp_path_factory):
    """A 30-frame, 64 px dataset with a principal point offset (and the default novel views:
    every 4th frame from 4 yaws), and its parsed JSON files."""
    out = ms.make_synthetic(
        tmp_path_factory.mktemp("ds") / "out",
        frames=30,
        res=RES,
        seed=0,
        principal_offset=(3.0, -2.0),
    )
    transforms = json.loads((out / "transforms.json").read_text())
    gt = json.loads((out / "synthetic_gt.json").read_text())
    return out, transforms, gt


def _parsing(out, i):
    return cv2.imread(str(out / "parsing" / f"{i}.png"), cv2.IMREAD_UNCHANGED)


def _mask(out, i, offset=1):
    return cv2.imread(str(out / "mask" / f"{i + offset}.png"), cv2.IMREAD_UNCHANGED)


def _is(img, bgr):
    return np.all(img == np.array(bgr, np.uint8), axis=-1)


def _regions(out, i):
    return decode_regions(cv2.imread(str(out / "regions" / f"{i}.png"), cv2.IMREAD_UNCHANGED))
