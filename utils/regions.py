"""Image regions of a talking head: the parsing colours and the region label maps.

Two encodings exist on disk:

- ``parsing/{img_id}.png`` (the released data's): an RGB image, head (0, 0, 255), neck
  (0, 255, 0), torso (255, 0, 0), anything else background.
- ``regions/{img_id}.png`` (datasets made by ``tools/make_synthetic.py`` and
  ``tools/preprocess.py``) and ``<set>/ours_N/regions/{k:05d}.png`` (written by
  ``render.py`` next to ``gt/``): a one-channel uint8 image of bit flags, one bit per
  region in :data:`REGION_BITS`. Regions may overlap (the mouth lies inside the head).

Both decode to a dict of boolean masks [H, W] by region name.
"""

from __future__ import annotations

import numpy as np

# RGB colours of the parsing maps, by region.
PARSING_RGB: dict[str, tuple[int, int, int]] = {
    "head": (0, 0, 255),
    "neck": (0, 255, 0),
    "torso": (255, 0, 0),
}
# Bits of the region label maps.
REGION_BITS: dict[str, int] = {"head": 1, "neck": 2, "torso": 4, "mouth": 8, "eyes": 16}
REGIONS = tuple(REGION_BITS)


def parsing_masks(parsing_rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Head / neck / torso masks of a parsing map in RGB order [H, W, 3] -> {name: [H, W]}."""
    return {name: np.all(parsing_rgb == np.array(rgb, dtype=parsing_rgb.dtype), axis=-1)
            for name, rgb in PARSING_RGB.items()}


def parsing_image(masks: dict[str, np.ndarray], shape: tuple[int, int] | None = None
                  ) -> np.ndarray:
    """An RGB parsing map [H, W, 3] uint8 (white background) from head / neck / torso masks;
    where masks overlap, the later of head, neck, torso wins."""
    if shape is None:
        shape = next(iter(masks.values())).shape
    out = np.full((*shape, 3), 255, dtype=np.uint8)
    for name, rgb in PARSING_RGB.items():
        if name in masks:
            out[masks[name]] = rgb
    return out


def encode_regions(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean masks by region name -> a uint8 label map [H, W] of :data:`REGION_BITS`."""
    unknown = set(masks) - set(REGION_BITS)
    if unknown:
        raise ValueError(f"unknown regions {sorted(unknown)}; known: {list(REGION_BITS)}")
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.uint8)
    for name, m in masks.items():
        out |= np.where(m, REGION_BITS[name], 0).astype(np.uint8)
    return out


def decode_regions(labels: np.ndarray) -> dict[str, np.ndarray]:
    """A uint8 label map [H, W] -> boolean masks by region name (every region, maybe empty)."""
    labels = np.asarray(labels)
    if labels.ndim == 3:  # a grayscale PNG read as colour: every channel holds the flags
        labels = labels[..., 0]
    return {name: (labels & bit) != 0 for name, bit in REGION_BITS.items()}
