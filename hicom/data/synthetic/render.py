"""Pixels of a scene: frames as arrays, clips as lossless mp4, single frames as PNG."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image

from hicom.core.files import atomic_write
from hicom.data.synthetic.scenes import COLOURS, SHAPES, Scene, object_radius


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size]
    return xs, ys


def _mask(shape: str, cx: int, cy: int, h: int, size: int) -> np.ndarray:
    xs, ys = _grid(size)
    dx, dy = np.abs(xs - cx), np.abs(ys - cy)
    if shape == "circle":
        return dx * dx + dy * dy <= h * h + h  # radius h + 1/2: no single-pixel nubs
    if shape == "square":
        return (dx <= h) & (dy <= h)
    if shape == "triangle":  # apex up, base at the bottom of the box
        return (dy <= h) & (2 * dx <= ys - (cy - h))
    if shape == "cross":
        arm = max(1, h // 3)
        return ((dx <= h) & (dy <= arm)) | ((dy <= h) & (dx <= arm))
    raise ValueError(f"unknown shape {shape!r} (choose one of: {', '.join(SHAPES)})")


def object_mask(scene: Scene, obj, t: int) -> np.ndarray:
    """(size, size) bool: the pixels `obj` covers in frame t (where it would be drawn; visible or not)."""
    cx, cy = obj.position(t)
    return _mask(obj.shape, cx, cy, object_radius(obj.size, scene.size), scene.size)


def render_frame(scene: Scene, t: int) -> np.ndarray:
    """Frame t as a (size, size, 3) uint8 RGB array."""
    if not 0 <= t < scene.num_frames:
        raise ValueError(f"scene {scene.id}: frame {t} outside [0, {scene.num_frames})")
    frame = np.empty((scene.size, scene.size, 3), np.uint8)
    frame[:] = scene.background
    for obj in scene.objects:
        if obj.visible(t):
            frame[object_mask(scene, obj, t)] = COLOURS[obj.colour]
    return frame


def write_video(scene: Scene, path) -> None:
    """Lossless H.264 mp4 (yuv420p, scene.fps).

    Lossless because x264's lossy rate control is not reproducible on frames this small (the same clip
    encoded twice in one process can decode differently); a lossless stream always decodes to the same
    pixels, whatever the encoder decides. On flat synthetic frames it is also smaller than crf 18.
    """
    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=scene.fps)
            stream.width = stream.height = scene.size
            stream.pix_fmt = "yuv420p"
            stream.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
            for t in range(scene.num_frames):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(render_frame(scene, t), format="rgb24")))
            container.mux(stream.encode(None))
    atomic_write(path, write)


def write_image(scene: Scene, t: int, path) -> None:
    """Lossless PNG of frame t."""
    atomic_write(path, lambda tmp: Image.fromarray(render_frame(scene, t)).save(tmp, format="PNG"))
