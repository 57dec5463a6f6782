"""Unit tests of the preprocessing's steps that need no landmark model: frame reading, which
frames to keep, fill or drop, options, the output folder and the written files."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from preprocessing.frame_selection import fill_gaps, mark_failed_tracks, segments
from preprocessing.frame_writer import SUBFOLDERS, jpeg_params, number_frames
from preprocessing.frames import FrameSource
from preprocessing.pipeline import GENERATOR, REPORT_NAME, PreprocessOptions, check_output
from utils.errors import InputError, OptionError
from utils.io_utils import write_image

# ----------------------------------------------------------------------------- frames


def test_frame_source_reads_folders_in_natural_order_and_names_bad_files(tmp_path):
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), i, np.uint8))
    src = FrameSource(tmp_path)
    assert [int(rgb[0, 0, 0]) for _, rgb in src] == [1, 2, 10] and len(src) == 3
    assert len(FrameSource(tmp_path, max_frames=2)) == 2
    (tmp_path / "f11.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="f11.png cannot be decoded"):
        list(FrameSource(tmp_path))
    (tmp_path / "f11.png").unlink()
    cv2.imwrite(str(tmp_path / "f12.png"), np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(InputError, match=r"f12.png is 8x9 but the first frame is 8x8"):
        list(FrameSource(tmp_path))


def test_frame_source_rejects_missing_empty_and_undecodable_inputs(tmp_path):
    with pytest.raises(InputError, match="nope.mp4 not found"):
        FrameSource(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        FrameSource(tmp_path / "empty")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="bad.mp4 cannot be decoded as a video.*ffmpeg"):
        FrameSource(bad)


# ----------------------------------------------------------------------------- decisions


def _track(f: int = 20) -> np.ndarray:
    base = np.array([[0.0, 0.0, 0.0], [0.0, 100.0, 0.0], [50.0, 50.0, 0.0]])
    return np.stack([base + [i, 0.0, 0.0] for i in range(f)])


def test_glitches_are_failed_tracks_and_short_gaps_are_filled():
    lm = _track()
    status = np.array(["ok"] * 20, dtype=object)
    lm[5] += 60.0  # one frame jumps away and back
    status[9:11] = "no_face"
    status[13:19] = "several_faces"  # longer than the gap we fill
    mark_failed_tracks(status, lm, fh=100.0)
    assert status[5] == "failed_track"
    filled = fill_gaps(status, lm, fh=100.0, max_gap=3)
    assert filled == [5, 9, 10]
    np.testing.assert_allclose(lm[9], _track()[9])
    assert (status[13:19] == "several_faces").all()
    kept = np.flatnonzero((status == "ok") | (status == "interpolated"))
    assert [(s.start, s.stop) for s in segments(kept, lm, 100.0)] == [(0, 13), (13, 14)]


def test_a_cut_is_not_a_glitch_nor_filled_across():
    lm = _track()
    lm[10:] += 80.0  # the camera cuts to another shot
    status = np.array(["ok"] * 20, dtype=object)
    status[10] = "no_face"
    mark_failed_tracks(status, lm, fh=100.0)
    assert (status != "failed_track").all()
    assert fill_gaps(status, lm, fh=100.0, max_gap=3) == []
    kept = np.flatnonzero(status == "ok")
    assert len(segments(kept, lm, 100.0)) == 2


def test_native_notices_are_hidden_and_other_native_output_passed_on(capfd):
    from preprocessing.landmarks import native_notices_filtered

    with native_notices_filtered() as console:
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 something real went wrong\n")
        console.write("progress\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err
    assert "something real went wrong" in err and "progress" in err


# ----------------------------------------------------------------------------- options, OUT


def test_options_are_checked():
    PreprocessOptions().check()
    for bad in (dict(size=8), dict(min_kept=2.0), dict(focal=-1.0), dict(max_frames=1),
                dict(occlusion="mask"), dict(occlusion_threshold=0.0)):
        with pytest.raises(OptionError):
            PreprocessOptions(**bad).check()


def test_output_folder_rules(tmp_path):
    check_output(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError, match="not a folder"):
        check_output(tmp_path / "file")
    other = tmp_path / "other"
    other.mkdir()
    (other / "transforms.json").write_text("{}")
    with pytest.raises(OptionError, match="holds no dataset made by tools/preprocess.py"):
        check_output(other)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / REPORT_NAME).write_text(json.dumps({"generator": GENERATOR}))
    check_output(ours)


# ----------------------------------------------------------------------------- written files


def test_written_frames_are_numbered_in_order_and_the_others_deleted(tmp_path):
    for sub, name in SUBFOLDERS.items():
        (tmp_path / sub).mkdir()
        for i in (0, 2, 3, 5):
            (tmp_path / sub / name.format(f"s{i}")).write_text(f"{sub} {i}")
    number_frames(tmp_path, np.array([0, 2, 3, 5]), np.array([2, 5]))
    assert sorted(p.name for p in (tmp_path / "ori_imgs").iterdir()) == ["0.jpg", "1.jpg"]
    assert (tmp_path / "ori_imgs" / "1.jpg").read_text() == "ori_imgs 5"
    assert sorted(p.name for p in (tmp_path / "mask").iterdir()) == ["1.png", "2.png"]
    assert (tmp_path / "mask" / "1.png").read_text() == "mask 2"
    assert (tmp_path / "regions" / "0.png").read_text() == "regions 2"


def test_images_are_written_in_rgb_with_their_parameters_and_no_temporary_files(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red
    write_image(tmp_path / "a.png", rgb)
    write_image(tmp_path / "g.png", rgb[..., 0])
    write_image(tmp_path / "a.jpg", rgb, jpeg_params(90))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png"))[..., ::-1], rgb)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED),
                                  rgb[..., 0])
    assert abs(int(cv2.imread(str(tmp_path / "a.jpg"))[8, 8, 2]) - 200) <= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png", "g.png"]
