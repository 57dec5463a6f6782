"""The options of the preprocessing (the command-line flags of tools/preprocess.py)."""

from __future__ import annotations

from dataclasses import dataclass

from utils.errors import OptionError

OCCLUSION_MODES = ("drop", "keep")
EXPRESSION_MODES = ("named", "pca")


@dataclass(frozen=True)
class PreprocessOptions:
    """Options of :func:`preprocessing.pipeline.preprocess`."""

    size: int = 512  # output width and height in pixels
    # "named": the person-independent named code (preprocessing.named_expression);
    # "pca": a per-clip PCA basis of exp_dim components (preprocessing.expression)
    expression: str = "named"
    exp_dim: int = 46  # length of the expression vectors of "pca"
    focal: float | None = None  # focal length in source-frame pixels; None: estimate it
    crop_scale: float = 2.2  # crop side in face heights (forehead to chin)
    smooth: int = 7  # window (frames) of the zero-lag pose smoothing; < 3 turns it off
    max_gap: int = 5  # longest run of failed frames that is filled in by interpolation
    min_kept: float = 0.5  # fewest frames, as a fraction of those read, to make a dataset
    max_frames: int | None = None  # read at most this many frames from the start
    jpeg_quality: int = 95
    min_confidence: float = 0.5  # face detection / tracking confidence of the face mesh
    occlusion: str = "drop"  # occluded frames: "drop" them or "keep" them (reported either way)
    occlusion_threshold: float = 0.03  # occluded area, in face areas, that flags a frame
    decontaminate: bool = True  # solve for the person's colour at the soft mask edges
    quiet: bool = False  # no progress bars

    def check(self) -> None:
        """Raise :class:`OptionError` for a value that cannot work."""
        rules = [
            (self.size >= 32, f"--size must be at least 32, got {self.size}"),
            (self.exp_dim >= 1, f"--exp_dim must be at least 1, got {self.exp_dim}"),
            (self.focal is None or self.focal > 0, f"--focal must be positive, got {self.focal}"),
            (self.crop_scale >= 1.2, f"--crop_scale must be at least 1.2, got {self.crop_scale}"),
            (self.smooth >= 0, f"--smooth must be >= 0, got {self.smooth}"),
            (self.max_gap >= 0, f"--max_gap must be >= 0, got {self.max_gap}"),
            (0 <= self.min_kept <= 1, f"--min_kept must be in [0, 1], got {self.min_kept}"),
            (self.max_frames is None or self.max_frames >= 2,
             f"--max_frames must be at least 2, got {self.max_frames}"),
            (0 <= self.jpeg_quality <= 100,
             f"--jpeg_quality must be in 0..100, got {self.jpeg_quality}"),
            (0 < self.min_confidence < 1,
             f"--min_confidence must be in (0, 1), got {self.min_confidence}"),
            (self.expression in EXPRESSION_MODES,
             f"--expression must be one of {', '.join(EXPRESSION_MODES)}, got "
             f"{self.expression!r}"),
            (self.occlusion in OCCLUSION_MODES,
             f"--occlusion must be one of {', '.join(OCCLUSION_MODES)}, got {self.occlusion!r}"),
            (self.occlusion_threshold > 0,
             f"--occlusion_threshold must be positive, got {self.occlusion_threshold}"),
        ]
        for ok, msg in rules:
            if not ok:
                raise OptionError(msg + ".")
