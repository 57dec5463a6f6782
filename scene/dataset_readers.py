"""Read an AD-NeRF / NeRFBlendShape dataset folder, laid out as the published GaussianHead data.

::

    <root>/transforms.json   h, w, fx, fy, cx, cy, frames[{img_id, transform_matrix, exp_ori}]
    <root>/ori_imgs/{img_id}.jpg  (or .png)
    <root>/mask/{img_id + 1}.png  soft person mask 0..255; one-based in the published data,
                                  zero-based names are detected too
    <root>/parsing/{img_id}.png   RGB (0,0,255) = head, (0,255,0) = neck, (255,0,0) = torso
    <root>/points3d.ply           optional initial point cloud

``transform_matrix`` is a camera-to-world matrix in the head's frame with OpenGL camera axes
(x right, y up, looking down -z). ``transforms.json`` is parsed once and checked completely by
:func:`read_dataset`; images are decoded by :func:`load_images` into one uint8 array (never a
float copy per frame) after composition onto the background with the mask.

Every problem raises :class:`DatasetError` with one message that names the file, the frame and
the fix, before anything is written anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scene.expression_meta import UNNAMED, ExpressionMeta, parse_expression_meta
from utils.errors import DatasetError, OptionError, first_few
from utils.ply_io import read_points

IMAGE_EXTS = (".jpg", ".png", ".jpeg")


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels; pixel (i, j) has its centre at (j + 0.5, i + 0.5)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another image size."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(width, height, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)

    def centred(self) -> Intrinsics:
        """The same focal lengths with the principal point at the image centre."""
        return Intrinsics(self.width, self.height, self.fx, self.fy, self.width / 2,
                          self.height / 2)

    def matrix(self) -> np.ndarray:
        """The 3x3 calibration matrix K."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )


@dataclass
class FrameInfo:
    """One entry of ``frames`` in transforms.json."""

    index: int  # position in transforms.json's frame list
    img_id: int
    c2w: np.ndarray  # [4, 4] camera-to-world, OpenGL axes, head frame
    exp: np.ndarray  # [E] expression vector
    image_path: Path
    mask_path: Path | None
    parsing_path: Path | None


@dataclass
class DatasetInfo:
    """A parsed and checked dataset with its train/test split."""

    root: Path
    intrinsics: Intrinsics  # at the size images are loaded at (after --resolution)
    source_intrinsics: Intrinsics  # as written in transforms.json
    frames: list[FrameInfo]
    train_ids: list[int]  # indices into frames
    test_ids: list[int]
    exp_dim: int
    mask_offset: int | None  # 0 or 1: mask name = img_id + offset; None without mask/
    only_head: bool
    points3d_path: Path | None
    notes: list[str] = field(default_factory=list)
    face_mesh: np.ndarray | None = None  # [N, 3] the clip's mean face in the head frame
    expression: ExpressionMeta = UNNAMED  # the space of exp_ori (named or not)

    @property
    def train_frames(self) -> list[FrameInfo]:
        return [self.frames[i] for i in self.train_ids]

    @property
    def test_frames(self) -> list[FrameInfo]:
        return [self.frames[i] for i in self.test_ids]


# ----------------------------------------------------------------------------------------------
# transforms.json


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise DatasetError(
            f"{path} cannot be read ({err.strerror}). Fix: check its permissions.") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}. "
            "Fix: repair the file (e.g. re-export it from the preprocessing)."
        ) from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: the top level must be a JSON object with h, w, fx, fy, cx, "
                           "cy and frames.")
    return meta


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_top_level(meta: dict, path: Path) -> Intrinsics:
    for key, kind in (("h", int), ("w", int), ("fx", float), ("fy", float), ("cx", float),
                      ("cy", float)):
        if key not in meta:
            raise DatasetError(f"{path}: missing key '{key}'. Fix: add the image {key} "
                               "(the published data have h, w, fx, fy, cx, cy at the top level).")
        value = meta[key]
        ok = (isinstance(value, int) and not isinstance(value, bool)) if kind is int else (
            _is_number(value))
        if kind is int and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok or not math.isfinite(float(value)) or float(value) <= 0:
            want = "a positive integer" if kind is int else "a positive number"
            raise DatasetError(f"{path}: '{key}' must be {want}, got {value!r}. Fix: correct it.")
    if "frames" not in meta:
        raise DatasetError(f"{path}: missing key 'frames'. Fix: add the list of frames.")
    if not isinstance(meta["frames"], list):
        raise DatasetError(f"{path}: 'frames' must be a list, got {type(meta['frames']).__name__}.")
    if not meta["frames"]:
        raise DatasetError(f"{path}: 'frames' is empty. Fix: the dataset needs at least two "
                           "frames (one to train on, one to hold out).")
    return Intrinsics(int(meta["w"]), int(meta["h"]), float(meta["fx"]), float(meta["fy"]),
                      float(meta["cx"]), float(meta["cy"]))


def _parse_frame(i: int, frame, path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    where = f"{path}, frames[{i}]"
    if not isinstance(frame, dict):
        raise DatasetError(f"{where}: each frame must be an object with img_id, "
                           "transform_matrix and exp_ori.")
    for key in ("img_id", "transform_matrix", "exp_ori"):
        if key not in frame:
            raise DatasetError(f"{where}: missing key '{key}'. Fix: add it to this frame.")
    img_id = frame["img_id"]
    if isinstance(img_id, float) and img_id.is_integer():
        img_id = int(img_id)
    if not isinstance(img_id, int) or isinstance(img_id, bool) or img_id < 0:
        raise DatasetError(f"{where}: 'img_id' must be a non-negative integer, got {img_id!r}.")
    where = f"{path}, frames[{i}] (img_id {img_id})"
    m = frame["transform_matrix"]
    if not (isinstance(m, list) and len(m) == 4 and all(
            isinstance(r, list) and len(r) == 4 and all(_is_number(x) for x in r) for r in m)):
        raise DatasetError(f"{where}: 'transform_matrix' must be a 4x4 list of numbers.")
    c2w = np.array(m, dtype=np.float64)
    if not np.isfinite(c2w).all():
        raise DatasetError(f"{where}: 'transform_matrix' contains NaN or infinity. Fix: re-run "
                           "the head tracking for this frame or drop the frame.")
    rot = c2w[:3, :3]
    det = np.linalg.det(rot)
    if abs(det) < 1e-6 or np.linalg.cond(c2w) > 1e8:
        raise DatasetError(f"{where}: 'transform_matrix' is not invertible (det of its rotation "
                           f"= {det:.3g}). Fix: re-run the head tracking for this frame or drop "
                           "it.")
    exp = frame["exp_ori"]
    if not isinstance(exp, list) or not exp or not all(_is_number(x) for x in exp):
        raise DatasetError(f"{where}: 'exp_ori' must be a non-empty list of numbers.")
    exp_arr = np.array(exp, dtype=np.float32)
    if not np.isfinite(exp_arr).all():
        raise DatasetError(f"{where}: 'exp_ori' contains NaN or infinity.")
    return img_id, c2w, exp_arr


def _find_image(folder: Path, img_id: int) -> Path | None:
    for ext in IMAGE_EXTS:
        p = folder / f"{img_id}{ext}"
        if p.is_file():
            return p
    return None


def _detect_mask_offset(mask_dir: Path, img_ids: list[int]) -> tuple[int, list[int]]:
    """Decide whether masks are named img_id + 1 (published data) or img_id.

    Returns the offset and the img_ids whose mask is missing under it.
    """
    names = {p.stem for p in mask_dir.glob("*.png")}
    missing = {off: [i for i in img_ids if str(i + off) not in names] for off in (1, 0)}
    # Prefer the published convention (one-based) when both are complete.
    best = min((1, 0), key=lambda off: (len(missing[off]), off != 1))
    return best, missing[best]


def read_dataset(
    root: str | Path,
    *,
    test_frames: int = 1000,
    eval_frames: int = 50,
    is_debug: bool = False,
    only_head: bool = False,
    resolution: int = -1,
) -> DatasetInfo:
    """Parse and check a dataset folder and split its frames.

    The last ``test_frames`` frames are held out (never trained on); the test set is the last
    ``eval_frames`` of them. ``is_debug`` keeps only the first 50 training frames.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found. Fix: pass -s with the folder that "
                           "holds transforms.json, ori_imgs/ and mask/.")
    tpath = root / "transforms.json"
    if not tpath.is_file():
        raise DatasetError(f"{tpath} not found. Fix: pass -s with a folder in the AD-NeRF / "
                           "NeRFBlendShape layout (transforms.json, ori_imgs/, mask/).")
    meta = _load_json(tpath)
    src_intr = _check_top_level(meta, tpath)

    parsed = [_parse_frame(i, f, tpath) for i, f in enumerate(meta["frames"])]
    exp_lens = [len(p[2]) for p in parsed]
    if len(set(exp_lens)) > 1:
        ref = exp_lens[0]
        bad = [i for i, n in enumerate(exp_lens) if n != ref]
        raise DatasetError(
            f"{tpath}: 'exp_ori' has {exp_lens[bad[0]]} values in frames[{bad[0]}] "
            f"(img_id {parsed[bad[0]][0]}) but {ref} in frames[0]; frames with another length: "
            f"{first_few(bad)}. Fix: every frame needs an expression vector of the same length."
        )
    seen: dict[int, int] = {}
    for i, (img_id, _, _) in enumerate(parsed):
        if img_id in seen:
            raise DatasetError(f"{tpath}: img_id {img_id} appears in frames[{seen[img_id]}] and "
                               f"frames[{i}]. Fix: give every frame its own img_id.")
        seen[img_id] = i

    n = len(parsed)
    if test_frames < 0 or eval_frames < 0:
        raise OptionError("--test_frames and --eval_frames must be >= 0.")
    if test_frames >= n:
        raise OptionError(
            f"--test_frames {test_frames} holds out every frame of {tpath} ({n} frames), leaving "
            f"none to train on. Fix: pass --test_frames with a value below {n} "
            f"(e.g. --test_frames {max(1, n // 10)})."
        )
    train_ids = list(range(n - test_frames))
    held_out = list(range(n - test_frames, n))
    test_ids = held_out[len(held_out) - min(eval_frames, len(held_out)):]
    if is_debug:
        train_ids = train_ids[:50]

    img_dir = root / "ori_imgs"
    if not img_dir.is_dir():
        raise DatasetError(f"{img_dir} not found. Fix: put the frames there as {{img_id}}.jpg.")
    needed = sorted(set(train_ids) | set(test_ids))
    image_paths: dict[int, Path] = {}
    missing_imgs = []
    for i in needed:
        p = _find_image(img_dir, parsed[i][0])
        if p is None:
            missing_imgs.append(parsed[i][0])
        else:
            image_paths[i] = p
    if missing_imgs:
        raise DatasetError(
            f"{img_dir}: {len(missing_imgs)} frame image(s) missing, img_id "
            f"{first_few(missing_imgs)}"
            f" (looked for {{img_id}}.jpg / .png). Fix: restore them, or remove those frames from "
            "transforms.json."
        )

    notes: list[str] = []
    mask_dir = root / "mask"
    mask_offset: int | None = None
    ids_needed = [parsed[i][0] for i in needed]
    if mask_dir.is_dir():
        mask_offset, missing = _detect_mask_offset(mask_dir, ids_needed)
        if missing:
            raise DatasetError(
                f"{mask_dir}: no mask for img_id {first_few(missing)} (expected "
                f"{{img_id{' + 1' if mask_offset else ''}}}.png, e.g. "
                f"{mask_dir / f'{missing[0] + mask_offset}.png'}). Fix: restore the masks or "
                "remove those frames."
            )
        notes.append(f"masks are named {'img_id + 1 (one-based, as the published data)' if mask_offset else 'img_id (zero-based)'}")  # noqa: E501
    elif not only_head:
        notes.append("no mask/ folder: frames are used as they are, without compositing")

    parsing_dir = root / "parsing"
    if only_head:
        if not parsing_dir.is_dir():
            raise DatasetError(f"--only_head needs {parsing_dir} (head = RGB (0,0,255)), which "
                               "does not exist. Fix: add the parsing maps or drop --only_head.")
        missing = [i for i in ids_needed if not (parsing_dir / f"{i}.png").is_file()]
        if missing:
            raise DatasetError(f"{parsing_dir}: no parsing map for img_id {first_few(missing)} "
                               "(expected {img_id}.png). Fix: restore them or drop --only_head.")

    frames = []
    for i, (img_id, c2w, exp) in enumerate(parsed):
        frames.append(FrameInfo(
            index=i, img_id=img_id, c2w=c2w, exp=exp,
            image_path=image_paths.get(i, img_dir / f"{img_id}.jpg"),
            mask_path=(mask_dir / f"{img_id + mask_offset}.png") if mask_offset is not None
            else None,
            parsing_path=(parsing_dir / f"{img_id}.png") if parsing_dir.is_dir() else None,
        ))

    intr = src_intr.scaled(*_target_size(src_intr.width, src_intr.height, resolution))
    ply = root / "points3d.ply"
    return DatasetInfo(
        root=root, intrinsics=intr, source_intrinsics=src_intr, frames=frames,
        train_ids=train_ids, test_ids=test_ids, exp_dim=exp_lens[0], mask_offset=mask_offset,
        only_head=only_head, points3d_path=ply if ply.is_file() else None, notes=notes,
        face_mesh=_face_mesh(meta, tpath),
        expression=parse_expression_meta(meta, tpath, exp_lens[0]),
    )


def _face_mesh(meta: dict, path: Path) -> np.ndarray | None:
    """The optional ``face_mesh`` of transforms.json (points [N, 3] in the head frame, written
    by tools/preprocess.py) or None."""
    if "face_mesh" not in meta:
        return None
    try:
        mesh = np.asarray(meta["face_mesh"], dtype=np.float64)
    except (TypeError, ValueError):
        mesh = np.zeros((0,))
    if mesh.ndim != 2 or mesh.shape[1] != 3 or len(mesh) < 10 or not np.isfinite(mesh).all():
        raise DatasetError(f"{path}: 'face_mesh' must be a list of at least 10 finite [x, y, z] "
                           f"points (got shape {mesh.shape}). Fix: remake the dataset with "
                           "tools/preprocess.py or delete the key.")
    return mesh


def read_driving(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expressions and poses of another dataset, for cross-reenactment.

    ``path`` is a transforms.json or a folder holding one; only ``frames[*].exp_ori`` and
    ``frames[*].transform_matrix`` are read (no images). Returns (c2w [4, 4], exp [E]) pairs.
    """
    return read_driving_set(path)[1]


def read_driving_set(path: str | Path
                     ) -> tuple[Path, list[tuple[np.ndarray, np.ndarray]], ExpressionMeta]:
    """:func:`read_driving` with the transforms.json's path and its expression space."""
    path = Path(path)
    tpath = path / "transforms.json" if path.is_dir() else path
    if not tpath.is_file():
        raise DatasetError(f"driving data {tpath} not found. Fix: pass --driving with a "
                           "transforms.json or the folder holding it.")
    meta = _load_json(tpath)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(f"{tpath}: 'frames' must be a non-empty list.")
    parsed = [_parse_frame(i, f, tpath) for i, f in enumerate(frames)]
    lens = {len(p[2]) for p in parsed}
    if len(lens) > 1:
        raise DatasetError(f"{tpath}: 'exp_ori' lengths differ between frames ({sorted(lens)}).")
    expression = parse_expression_meta(meta, tpath, lens.pop())
    return tpath, [(c2w, exp) for _, c2w, exp in parsed], expression


def _target_size(w: int, h: int, resolution: int) -> tuple[int, int]:
    """Image size after ``--resolution`` (the 3DGS convention)."""
    if resolution in (1, 2, 4, 8):
        return round(w / resolution), round(h / resolution)
    if resolution == -1:
        scale = w / 1600 if w > 1600 else 1.0
    elif resolution > 0:
        scale = w / resolution
    else:
        raise OptionError(
            f"--resolution must be -1, 1, 2, 4, 8 or a target width; got {resolution}.")
    return int(w / scale), int(h / scale)


# ----------------------------------------------------------------------------------------------
# point cloud


def read_points3d(path: Path) -> np.ndarray:
    """Positions [P, 3] of a PLY point cloud (its colours are not used)."""
    return read_points(path, DatasetError, "delete it to start from random points, or "
                       "regenerate it.")
