"""Videos of episodes and dreams: GIF (always) or MP4 (with ``imageio[ffmpeg]``), on any filesystem."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tfrecords.runtime import fileio
from tfrecords.runtime.errors import UsageError

FORMATS = (".gif", ".mp4")


def check_path(path: str, flag: str = "--out") -> None:
    """UsageError unless ``path`` ends in .gif or .mp4."""
    if os.path.splitext(path)[1].lower() not in FORMATS:
        raise UsageError(f"{flag} must end in .gif or .mp4, got {path!r}")


def write(path: str, frames: np.ndarray | Sequence[np.ndarray], fps: float = 25) -> None:
    """Writes uint8 frames [H, W, 3] to ``path`` (.gif or .mp4) atomically, creating its directory.

    imageio writes local files, so the video is made in a local temporary file and then copied into
    place. A missing MP4 encoder is a UsageError naming the package to install.
    """
    import imageio.v2 as imageio

    fileio.makedirs(fileio.dirname(path))
    with fileio.LocalTemp(path) as tmp:
        if path.lower().endswith(".mp4"):
            try:
                imageio.mimsave(tmp.path, list(frames), fps=fps, format="FFMPEG")
            except (ValueError, ImportError, RuntimeError) as e:
                raise UsageError(f"cannot write MP4 ({e}); pip install 'imageio[ffmpeg]' or use a .gif") from None
        else:
            imageio.mimsave(tmp.path, list(frames), duration=1000 / fps, loop=0)
        tmp.commit()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] -> uint8, rounded."""
    return np.clip(np.asarray(images) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def action_bars(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """A small panel with steering (centred), gas and brake as bars."""
    panel = np.full((height, width, 3), 30, np.uint8)
    third = width // 3
    colours = [(80, 160, 255), (80, 220, 80), (230, 70, 70)]
    for k in range(3):
        x0, x1 = k * third + 4, (k + 1) * third - 4
        if k == 0:
            mid = height // 2
            y = int(mid - a[0] * (height // 2 - 2))
            panel[min(y, mid) : max(y, mid) + 1, x0:x1] = colours[0]
        else:
            y = int(height - 2 - a[k] * (height - 4))
            panel[y : height - 2, x0:x1] = colours[k]
    return panel


def agent_frames(
    raws: Sequence[np.ndarray], recons: Sequence[np.ndarray], actions: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """real 96x96 frame (x2) | V's 64x64 reconstruction (x3) | action bars, 192 px high."""
    frames = []
    for raw, rec, a in zip(raws, recons, actions):
        left = np.asarray(raw, np.uint8).repeat(2, 0).repeat(2, 1)
        mid = to_uint8(rec).repeat(3, 0).repeat(3, 1)
        frames.append(np.concatenate([left, mid, action_bars(a, 192, 96)], axis=1))
    return frames


def side_by_side(real: np.ndarray, dreamed: np.ndarray, scale: int) -> np.ndarray:
    """uint8 frames [T, H*scale, 2*W*scale + scale, 3]: real | white gap | dream (in [0, 1])."""
    real = np.asarray(real, np.uint8)
    gap = np.full((*real.shape[:2], 1, 3), 255, np.uint8)
    both = np.concatenate([real, gap, to_uint8(dreamed)], axis=2)
    return both.repeat(scale, axis=1).repeat(scale, axis=2)
