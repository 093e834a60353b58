"""Frame preprocessing as in the paper: drop the indicator bar, resize to 64 x 64, uint8."""

from __future__ import annotations

import numpy as np
from PIL import Image

CROP_ROWS = 84  # rows 84..95 of CarRacing's 96 x 96 frame hold the indicator bar
SIZE = 64


def preprocess_frame(obs: np.ndarray, full_frame: bool = False) -> np.ndarray:
    """Maps a raw 96 x 96 x 3 uint8 observation to the stored frame.

    Keeps rows 0..83 and resizes them to 64 x 64 (PIL bilinear, which filters when
    shrinking), or returns the full frame unchanged when ``full_frame``.
    """
    obs = np.asarray(obs, np.uint8)
    if full_frame:
        return obs.copy()
    img = Image.fromarray(obs[:CROP_ROWS])
    return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.uint8)
