"""How far an avatar follows a real driver, where no ground truth exists: a frame strip and the
correlation of the rendered mouth opening and eye closure with the driver's.

    python bench/drive_real.py --avatar_data data/A --driving data/B \
        --renders output/A/driving_B/ours_N/renders --out bench/results/drive_B_to_A

``--renders`` are the frames of ``render.py -m output/A --driving data/B`` (the avatar's own
test poses, not ``--driving_pose``), rendered in the order of B's frames. The driver's
reference is twofold: its named coefficients (``jawOpen``, the mean of ``eyeBlinkLeft`` and
``eyeBlinkRight``; datasets of ``tools/preprocess.py --expression named``) and the same image
measures as bench/reenactment.py taken on B's own frames (the mouth opening: the share of dark
pixels in a box about the mouth; the eye closure: one minus the share of white, unsaturated
pixels in boxes about the eyes). The boxes come from each dataset's region maps (the union
over its frames). The driver's own image measure against its own coefficient is the ceiling of
what the render can reach with these measures.

Writes ``drive.json`` (per-frame values and the correlations) and ``strip.png`` (rows: B's
frame, A's render; the frames of the widest jaw opening and the deepest blink among them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import commit  # noqa: E402
from bench.face_measures import (  # noqa: E402
    box,
    corr,
    eye_boxes,
    eye_closure,
    mouth_opening,
    read_image,
)
from utils.cli import make_parser  # noqa: E402
from utils.regions import decode_regions  # noqa: E402


def _region_boxes(root: Path, ids: list[int]) -> tuple[tuple[slice, slice], list]:
    """The mouth box and eye boxes of a dataset: the union of its frames' region maps."""
    mouth = eyes = None
    for i in ids:
        f = root / "regions" / f"{i}.png"
        if not f.is_file():
            continue
        r = decode_regions(read_image(f, cv2.IMREAD_UNCHANGED))
        mouth = r["mouth"] if mouth is None else mouth | r["mouth"]
        eyes = r["eyes"] if eyes is None else eyes | r["eyes"]
    if mouth is None or not mouth.any() or not eyes.any():
        raise SystemExit(f"{root / 'regions'}: no mouth or eye region in the frames used. Fix: "
                         "make the dataset with tools/preprocess.py, which writes regions/.")
    return box(mouth), eye_boxes(eyes)


def _measures(images: list[np.ndarray], mouth_box, eye_boxes) -> dict[str, list[float]]:
    white = [1.0 - eye_closure(im, eye_boxes, 1.0) for im in images]
    open_share = float(np.percentile(white, 90))
    return {"mouth_opening": [mouth_opening(im, mouth_box) for im in images],
            "eye_closure": [eye_closure(im, eye_boxes, open_share) for im in images]}


def _driver_image(root: Path, img_id: int) -> np.ndarray:
    for ext in (".jpg", ".png"):
        if (root / "ori_imgs" / f"{img_id}{ext}").is_file():
            return read_image(root / "ori_imgs" / f"{img_id}{ext}")
    raise SystemExit(f"{root / 'ori_imgs'}: no image of frame {img_id}. Fix: pass the driving "
                     "dataset the renders were made from.")


def analyse(avatar_data: Path, driving: Path, renders: Path, out: Path,
            strip_frames: int = 8, cell: int = 160) -> dict:
    """Scores and strip of the renders in ``renders``; writes drive.json and strip.png."""
    files = sorted(renders.glob("*.png"), key=lambda f: int(f.stem) if f.stem.isdigit()
                   else f.stem)
    if len(files) < 3:
        raise SystemExit(f"{renders}: {len(files)} rendered frames; at least 3 are needed.")
    meta = json.loads((driving / "transforms.json").read_text())
    names = meta.get("exp_names")
    if not names or "jawOpen" not in names:
        raise SystemExit(f"{driving / 'transforms.json'} has no named expressions (exp_names). "
                         "Fix: preprocess the driver with tools/preprocess.py --expression named.")
    frames = meta["frames"][:len(files)]
    if len(frames) < len(files):
        raise SystemExit(f"{renders} holds {len(files)} frames but {driving} only {len(frames)}.")
    codes = np.array([f["exp_ori"] for f in frames], dtype=np.float64)
    jaw = codes[:, names.index("jawOpen")].tolist()
    blink = codes[:, [names.index("eyeBlinkLeft"), names.index("eyeBlinkRight")]].mean(1).tolist()
    ids = [int(f["img_id"]) for f in frames]
    driver = [_driver_image(driving, i) for i in ids]
    render = [read_image(f) for f in files]
    own = json.loads((avatar_data / "transforms.json").read_text())["frames"]
    a_mouth, a_eyes = _region_boxes(avatar_data, [int(f["img_id"]) for f in own])
    d_mouth, d_eyes = _region_boxes(driving, ids)
    m_render = _measures(render, a_mouth, a_eyes)
    m_driver = _measures(driver, d_mouth, d_eyes)
    result = {
        "commit": commit(), "avatar_data": str(avatar_data), "driving": str(driving),
        "renders": str(renders), "frames": len(files),
        "mouth_opening_vs_jaw": {"render": corr(m_render["mouth_opening"], jaw),
                                 "driver": corr(m_driver["mouth_opening"], jaw)},
        "eye_closure_vs_blink": {"render": corr(m_render["eye_closure"], blink),
                                 "driver": corr(m_driver["eye_closure"], blink)},
        "mouth_opening_render_vs_driver": corr(m_render["mouth_opening"],
                                                m_driver["mouth_opening"]),
        "eye_closure_render_vs_driver": corr(m_render["eye_closure"], m_driver["eye_closure"]),
        "per_frame": [{"driver_frame": i, "jawOpen": j, "eyeBlink": b,
                       "mouth_opening": {"render": m_render["mouth_opening"][k],
                                         "driver": m_driver["mouth_opening"][k]},
                       "eye_closure": {"render": m_render["eye_closure"][k],
                                       "driver": m_driver["eye_closure"][k]}}
                      for k, (i, j, b) in enumerate(zip(ids, jaw, blink))],
    }
    picks = sorted({int(np.argmax(jaw)), int(np.argmax(blink)),
                    *np.linspace(0, len(files) - 1, max(strip_frames - 2, 1)).astype(int)})

    def fit(img: np.ndarray, label: str = "") -> np.ndarray:
        img = cv2.resize(np.ascontiguousarray(img), (cell, cell), interpolation=cv2.INTER_AREA)
        if label:
            cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 0, 0), 1)
        return img

    rows = [np.concatenate([fit(driver[k], f"B {ids[k]} jaw {jaw[k]:.2f}") for k in picks], 1),
            np.concatenate([fit(render[k], "A driven") for k in picks], 1)]
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "strip.png"), np.concatenate(rows, 0)[..., ::-1])
    (out / "drive.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("--avatar_data", type=Path, required=True,
                   help="the avatar's dataset (its region maps place the mouth and eyes)")
    p.add_argument("--driving", type=Path, required=True, help="the driver's dataset")
    p.add_argument("--renders", type=Path, required=True,
                   help="folder of the driven renders (render.py --driving ... renders/)")
    p.add_argument("--out", type=Path, required=True, help="folder for drive.json and strip.png")
    p.add_argument("--strip_frames", type=int, default=8, help="frames on the strip")
    a = p.parse_args(argv)
    r = analyse(a.avatar_data, a.driving, a.renders, a.out, a.strip_frames)
    keys = ("frames", "mouth_opening_vs_jaw", "eye_closure_vs_blink",
            "mouth_opening_render_vs_driver", "eye_closure_render_vs_driver")
    print(json.dumps({k: r[k] for k in keys}, indent=1))
    print(f"wrote {a.out / 'drive.json'} and {a.out / 'strip.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
