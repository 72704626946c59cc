"""Reading visual inputs (video files, frame directories, single images) into sampled RGB frames.

Every unreadable input - missing, empty, corrupt, truncated, too slow - raises one error type,
VideoReadError, so a data loader can catch exactly that and skip or log the sample. decord and
PyAV are interchangeable: both count frames the same way, sample the same indices and return the
same pixels (both wrap ffmpeg's decoder and yuv->rgb24 conversion), so a run's results do not
depend on which one was installed. Frames are then turned into model input by FramePreprocessor,
which reads and writes the same preprocessor_config.json as transformers' SiglipImageProcessor.

Given the preprocessor (`scale_for`), a video whose frames are larger than the tower's input is scaled down
inside the decoder (ffmpeg's swscale, bilinear), to the size the preprocessor would resize it to: the
full-size RGB frame is never made, which is most of the cost of reading 720p or larger video for a 384 px
tower. Both decoders do so; their ffmpeg builds round differently there (under one level on average), so
scaled frames are close, not identical, across decoders. Frames no larger than the input are not scaled
in the decoder: the preprocessor upsamples them (PIL bicubic) exactly as before.
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hicom.core.errors import InputError
from hicom.core.files import atomic_write_bytes
from hicom.data.settings import DECODERS, ReadLimits

# Distribution name of each decoder, for decoder_info.
_DISTRIBUTIONS = {"decord": "decord", "pyav": "av"}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
# decord 0.6.0 refuses GIFs ("Failed to measure duration/frame-count due to broken metadata"),
# so these always go through PyAV; VideoClip.decoder records that.
PYAV_ONLY_SUFFIXES = frozenset({".gif"})
DEFAULT_IMAGE_FPS = 3.0
PREPROCESSOR_CONFIG = "preprocessor_config.json"
# Bump when read_video returns other pixels for the same file and arguments: it is part of the feature
# cache's frame policy, so cached tower outputs of the old pixels become misses (2: scaling in the
# decoder, PyAV applying the stream's rotation as decord does).
READ_VERSION = 2
# swscale's filter for scaling in the decoder: decord 0.6's filter graph (ffmpeg 4's `scale`) uses bilinear,
# so PyAV does too, which keeps the two decoders' scaled frames within a level or two of each other.
_SCALING = "BILINEAR"
# Slack, in frames, when turning seconds into frame numbers: 1.16 s * 25 fps is 28.999999999999996
# in floating point, and should still start at frame 29.
_FRAME_EPS = 1e-6


class VideoReadError(RuntimeError, InputError):
    """A visual input cannot be read; `path` names it and `reason` says why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[VideoReadError], tuple[str, str]]:
        # Rebuild from (path, reason), so the error survives pickling out of DataLoader workers.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class VideoClip:
    """Sampled frames of one visual input.

    frames: (T, H, W, 3) uint8 RGB. indices: the T frame numbers in the whole video (not in the
    start/end range), non-decreasing. fps: the source frame rate, so frame i is at i / fps seconds.
    num_available: how many frames the sample was drawn from (the start/end range, else all).
    decoder: what decoded it - "decord", "pyav", or "pil" for images and frame directories.
    """

    frames: np.ndarray
    indices: list[int]
    fps: float
    num_available: int
    decoder: str


def segment_midpoint_indices(num_available: int, num_frames: int) -> list[int]:
    """Split [0, num_available) into num_frames equal segments and take each one's midpoint.

    Always exactly num_frames indices, so batches have a fixed length; a video shorter than that
    repeats frames (non-decreasing, within [0, num_available - 1]).
    """
    if num_available < 1:
        raise ValueError(f"num_available must be >= 1, got {num_available}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return [int((i + 0.5) * num_available / num_frames) for i in range(num_frames)]


def decoder_info(decoder: str) -> dict[str, str]:
    """Name and installed version of a decoder, for run tracking (decoders differ across versions)."""
    _check_decoder(decoder)
    return {"decoder": decoder, "version": metadata.version(_DISTRIBUTIONS[decoder])}


def read_video(
    path: str | os.PathLike,
    num_frames: int,
    decoder: str = "decord",
    start: float | None = None,
    end: float | None = None,
    timeout_s: float = 60.0,
    fps: float = DEFAULT_IMAGE_FPS,
    limits: ReadLimits = ReadLimits(),
    scale_for: FramePreprocessor | None = None,
) -> VideoClip:
    """Sample num_frames frames (segment midpoints) of a video file, frame directory or image.

    start/end (seconds) first restrict the video to the frames whose display interval
    [i/fps, (i+1)/fps) overlaps [start, end): first = max(floor(start*fps), 0) and
    last = min(ceil(end*fps) - 1, N - 1); a range with no frames is a VideoReadError.
    A frame directory holds one image per frame, taken in natural order (frame_2 before
    frame_10) at the given `fps`; a single image is a 1-frame clip whatever num_frames is, and
    start/end do not apply to it.

    The whole read runs in a worker thread and is abandoned after timeout_s: decord can hang
    inside ffmpeg on some broken files, and a thread stuck in C code cannot be killed, so it is
    left running (a daemon thread, so it cannot block interpreter exit) and a VideoReadError is
    raised. A new reader is opened per call: decord leaks memory and can hang when reused.

    limits (params.yaml data.limits) are checked before any frame is decoded: a file, frame
    (width x height) or duration over them is a VideoReadError naming the input and the bound.

    scale_for: the preprocessor the frames go to; a video file's frames larger than its input are scaled
    down in the decoder to FramePreprocessor.decode_size (frame directories and images are read as they are).
    A rotated video (display matrix) comes out upright from both decoders.
    """
    _check_decoder(decoder)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    return _bounded(path, timeout_s, lambda: _read(path, num_frames, decoder, start, end, fps, limits, scale_for))


def _check_decoder(decoder: str) -> None:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")


def _bounded(path: Path, timeout_s: float, read: Callable[[], VideoClip]) -> VideoClip:
    """Run read() in a daemon thread; raise VideoReadError if it has not finished in timeout_s.

    A daemon thread rather than a ThreadPoolExecutor: the executor's workers are joined at
    interpreter exit, so one hung decode would keep the process from ever exiting.
    """
    future: concurrent.futures.Future[VideoClip] = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(read())
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)

    threading.Thread(target=work, name=f"read_video {path.name}", daemon=True).start()
    done, _ = concurrent.futures.wait([future], timeout=timeout_s)
    if not done:
        raise VideoReadError(path, f"timed out after {timeout_s:g}s (decoder thread abandoned)")
    return future.result()


def _frame_range(path: Path, count: int, fps: float, start: float | None, end: float | None) -> range:
    """The frames [first, last] that start/end (seconds) select out of count frames at fps."""
    first = 0 if start is None else max(math.floor(start * fps + _FRAME_EPS), 0)
    last = count - 1 if end is None else min(math.ceil(end * fps - _FRAME_EPS) - 1, count - 1)
    if last < first:
        raise VideoReadError(
            path, f"time range start={start} end={end} selects no frames ({count} frames at {fps:g} fps)"
        )
    return range(first, last + 1)


def _sample(frames: range, num_frames: int) -> list[int]:
    return [frames[i] for i in segment_midpoint_indices(len(frames), num_frames)]


def _read(
    path: Path, num_frames: int, decoder: str, start: float | None, end: float | None, fps: float,
    limits: ReadLimits, scale_for: FramePreprocessor | None,
) -> VideoClip:
    """Dispatch on what path is; runs inside _bounded, so even a stat on a stuck mount is bounded."""
    if path.is_dir():
        return _read_frame_dir(path, num_frames, start, end, fps, limits)
    if not path.exists():
        raise VideoReadError(path, "no such file or directory")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise VideoReadError(path, f"file of {size} bytes is over data.limits.max_file_bytes={limits.max_file_bytes}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return VideoClip(_load_rgb(path, limits)[None], [0], fps, 1, "pil")
    if size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    shape = _check_stream(path, limits)
    size = _decode_size(path, shape, scale_for)
    decode = _decode_pyav if decoder == "pyav" or suffix in PYAV_ONLY_SUFFIXES else _decode_decord
    return decode(path, num_frames, start, end, size)


def _check_frame_size(path: Path, width: int, height: int, limits: ReadLimits) -> None:
    if width * height > limits.max_frame_pixels:
        raise VideoReadError(path, f"frames of {width}x{height} = {width * height} pixels are over "
                                   f"data.limits.max_frame_pixels={limits.max_frame_pixels}")


def _check_stream(path: Path, limits: ReadLimits) -> tuple[int, int] | None:
    """Frame size and duration from the container's headers (PyAV, nothing decoded), before either decoder
    allocates a frame; returns the coded (width, height). A file PyAV cannot open is left to the decoder,
    which names what is wrong with it."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError:
        return None
    with container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        _check_frame_size(path, stream.codec_context.width, stream.codec_context.height, limits)
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
            (container.duration or 0) / 1e6
        if duration > limits.max_duration_s:
            raise VideoReadError(path, f"{duration:.0f} s long, over data.limits.max_duration_s="
                                       f"{limits.max_duration_s:g}")
        return stream.codec_context.width, stream.codec_context.height


def _quarter_turns(frame) -> int:
    """A PyAV frame's display rotation in counter-clockwise quarter turns (0-3), as np.rot90 counts them."""
    return round(frame.rotation / 90) % 4


def _rotation(path: Path) -> int:
    """The stream's display rotation in quarter turns, from its first decoded frame: PyAV shows the display
    matrix on frames only. 0 where no frame decodes (the decoder then names the failure)."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0), None)
    except av.FFmpegError:
        return 0
    return 0 if frame is None else _quarter_turns(frame)


def _decode_size(path: Path, coded: tuple[int, int] | None,
                 scale_for: FramePreprocessor | None) -> tuple[int, int] | None:
    """Displayed (width, height) to decode at, or None to decode at full size."""
    if scale_for is None or coded is None:
        return None
    width, height = coded
    if scale_for.decode_size(width, height) is None and scale_for.decode_size(height, width) is None:
        return None  # not larger than the input either way up: nothing to scale down
    if _rotation(path) % 2:
        width, height = height, width
    return scale_for.decode_size(width, height)


def _decord_scales_to(width: int) -> bool:
    """Whether decord 0.6.0 returns frames `width` pixels wide intact. It hands a filtered frame over without a copy
    when the row stride is a multiple of the width, taking stride / width as the channel count; ffmpeg pads an RGB
    row to 3 x the width rounded up (1, 2, ..., 32 pixels) until the stride is a multiple of 32 bytes, so widths
    such as 72 or 48 (stride 288 and 192: "4 channels") fail its size check. Pinned against decord in the tests."""
    stride, step = 3 * width, 1
    while stride % 32 and step < 32:
        step *= 2
        stride = 3 * (-(-width // step) * step)
    return stride == 3 * width or stride % width != 0


def _decode_decord(path: Path, num_frames: int, start: float | None, end: float | None,
                   size: tuple[int, int] | None) -> VideoClip:
    """decord scales in its filter graph, after turning the frame upright: size is the displayed size. Widths it
    cannot return (_decord_scales_to) are decoded at full size, left to the preprocessor to resize."""
    import decord

    if size is not None and not _decord_scales_to(size[0]):
        size = None
    width, height = size or (-1, -1)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, width=width, height=height)
        count, fps = len(reader), float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as exc:
        raise VideoReadError(path, f"decord could not open it: {type(exc).__name__}: {exc}") from exc
    if count < 1:
        raise VideoReadError(path, "decord found no video frames")
    if not fps > 0:
        raise VideoReadError(path, f"decord reports a frame rate of {fps}")
    selected = _frame_range(path, count, fps, start, end)
    indices = _sample(selected, num_frames)
    unique = sorted(set(indices))
    try:
        decoded = reader.get_batch(unique).asnumpy()
    except (decord.DECORDError, RuntimeError) as exc:
        raise VideoReadError(path, f"decord failed to decode frames: {type(exc).__name__}: {exc}") from exc
    position = {index: row for row, index in enumerate(unique)}
    frames = decoded[[position[i] for i in indices]]
    return VideoClip(frames, indices, fps, len(selected), "decord")


def _decode_pyav(path: Path, num_frames: int, start: float | None, end: float | None,
                 size: tuple[int, int] | None) -> VideoClip:
    """Decode sequentially from the first frame and keep the sampled ones.

    Each kept frame is converted to RGB at `size` (the displayed size; swscale scales and converts in one
    pass) and turned upright by its display rotation, as decord does.

    Sequential decoding gives exact frame numbers without relying on seek accuracy; its cost
    grows with the position of the last sampled frame. The frame count is the container's
    nb_frames, or, where the container has none (mkv, webm), the number of video packets - what
    decord counts too, without decoding the file twice.
    """
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoReadError(path, f"PyAV could not open it: {type(exc).__name__}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise VideoReadError(path, "PyAV found no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        if not fps > 0:
            raise VideoReadError(path, "PyAV found no frame rate in the video stream")
        count = stream.frames or _count_packets(path)
        if count < 1:
            raise VideoReadError(path, "PyAV found no video frames")
        selected = _frame_range(path, count, fps, start, end)
        indices = _sample(selected, num_frames)
        wanted, last = set(indices), max(indices)
        # One decode thread, like decord's num_threads=1: data loaders parallelise across workers.
        stream.codec_context.thread_count = 1
        decoded: dict[int, np.ndarray] = {}
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    decoded[index] = _upright_rgb(frame, size)
                if index == last:
                    break
        except av.FFmpegError as exc:
            raise VideoReadError(path, f"PyAV failed to decode frames: {type(exc).__name__}: {exc}") from exc
    if last not in decoded:
        raise VideoReadError(
            path, f"PyAV failed to decode frames: the stream ended before frame {last} of {count}"
        )
    frames = np.stack([decoded[i] for i in indices])
    return VideoClip(frames, indices, fps, len(selected), "pyav")


def _upright_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    """A PyAV frame as (H, W, 3) RGB, displayed upright (np.rot90 by its rotation, matching decord's transpose
    filters pixel for pixel), at size (displayed width, height) when given."""
    turns = _quarter_turns(frame)
    if size is None:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        width, height = size if turns % 2 == 0 else size[::-1]
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation=_SCALING)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _count_packets(path: Path) -> int:
    """Video packets in the file (one per frame): a separate open, so no seek back is needed."""
    import av

    try:
        with av.open(str(path)) as container:
            return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size > 0)
    except av.FFmpegError as exc:
        raise VideoReadError(path, f"PyAV failed to count frames: {type(exc).__name__}: {exc}") from exc


def _natural_key(name: str) -> list[int | str]:
    """Sort key comparing digit runs as numbers, so frame_2.jpg comes before frame_10.jpg."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _load_rgb(path: Path, limits: ReadLimits) -> np.ndarray:
    try:
        if path.stat().st_size == 0:
            raise VideoReadError(path, "empty file (0 bytes)")
        with Image.open(path) as image:  # opening reads the header only: the size is checked before decoding
            _check_frame_size(path, *image.size, limits)
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoReadError(path, f"PIL could not read the image: {type(exc).__name__}: {exc}") from exc


def _read_frame_dir(path: Path, num_frames: int, start: float | None, end: float | None, fps: float,
                    limits: ReadLimits) -> VideoClip:
    names = sorted(
        (entry.name for entry in os.scandir(path) if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES),
        key=_natural_key,
    )
    if not names:
        raise VideoReadError(path, f"frame directory holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    selected = _frame_range(path, len(names), fps, start, end)
    indices = _sample(selected, num_frames)
    loaded: dict[int, np.ndarray] = {}
    for index in sorted(set(indices)):
        frame = _load_rgb(path / names[index], limits)
        reference = next(iter(loaded.values()), frame)
        if frame.shape != reference.shape:
            raise VideoReadError(
                path / names[index], f"frame size {frame.shape[:2]} differs from {reference.shape[:2]} of earlier frames"
            )
        loaded[index] = frame
    return VideoClip(np.stack([loaded[i] for i in indices]), indices, fps, len(selected), "pil")


@dataclass(frozen=True)
class FramePreprocessor:
    """Frames -> normalised vision-encoder input, matching the SigLIP image processor.

    pad_to_square first expands each frame to a square (background = image_mean * 255, frame
    centred) so resizing does not distort the aspect ratio; False resizes directly, as
    transformers' SiglipImageProcessor does. Resizing is PIL bicubic, as in transformers.
    """

    image_size: int
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pad_to_square: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.image_size, int) and self.image_size >= 1):
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"{name} needs 3 values (R, G, B), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if not all(0.0 <= m <= 1.0 for m in self.image_mean):
            raise ValueError(f"image_mean must lie in [0, 1] (pixels are scaled to [0, 1]), got {self.image_mean}")
        if not all(s > 0 for s in self.image_std):
            raise ValueError(f"image_std must be > 0, got {self.image_std}")
        if not isinstance(self.pad_to_square, bool):
            raise ValueError(f"pad_to_square must be true or false, got {self.pad_to_square!r}")

    @classmethod
    def from_towers(cls, directory: str | os.PathLike | None, image_size: int) -> FramePreprocessor:
        """The towers' saved preprocessor where the directory has one; else SigLIP's defaults at image_size
        (a tower built from a config, with no directory of its own)."""
        if directory is not None and (Path(directory) / PREPROCESSOR_CONFIG).is_file():
            return cls.from_pretrained(directory)
        return cls(image_size)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> FramePreprocessor:
        """Read preprocessor_config.json as written by SiglipImageProcessor.save_pretrained (or ours).

        Settings this class cannot reproduce (no rescale or normalise, non-square or
        shortest-edge size, non-bicubic resampling) are errors rather than silently ignored.
        """
        config_path = Path(directory) / PREPROCESSOR_CONFIG
        try:
            config = json.loads(config_path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{config_path}: no {PREPROCESSOR_CONFIG} in {directory}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{config_path}: not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: expected a JSON object, got {type(config).__name__}")

        def field(name: str) -> Any:
            if name not in config:
                raise ValueError(f"{config_path}: missing field {name!r}")
            return config[name]

        size = field("size")
        if not (isinstance(size, dict) and set(size) >= {"height", "width"} and size["height"] == size["width"]):
            raise ValueError(f"{config_path}: field 'size' must be a square {{'height': S, 'width': S}}, got {size!r}")
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if config.get(flag, True) is not True:
                raise ValueError(f"{config_path}: field {flag!r} is {config[flag]!r}; only true is supported")
        if not math.isclose(config.get("rescale_factor", 1 / 255), 1 / 255, rel_tol=1e-6):
            raise ValueError(f"{config_path}: field 'rescale_factor' is {config['rescale_factor']!r}; only 1/255 is supported")
        if config.get("resample", Image.Resampling.BICUBIC) != Image.Resampling.BICUBIC:
            raise ValueError(f"{config_path}: field 'resample' is {config['resample']!r}; only 3 (bicubic) is supported")
        try:
            return cls(
                image_size=size["height"],
                image_mean=tuple(field("image_mean")),
                image_std=tuple(field("image_std")),
                pad_to_square=config.get("pad_to_square", cls.pad_to_square),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{config_path}: {exc}") from exc

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write preprocessor_config.json, readable by this class and by SiglipImageProcessor.

        pad_to_square is an extra key: transformers keeps it as an unused attribute.
        """
        config = {
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": True,
            "size": {"height": self.image_size, "width": self.image_size},
            "resample": int(Image.Resampling.BICUBIC),
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "pad_to_square": self.pad_to_square,
        }
        atomic_write_bytes(Path(directory) / PREPROCESSOR_CONFIG, (json.dumps(config, indent=2) + "\n").encode())

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 RGB -> (T, 3, S, S) float32: pad, resize, scale to [0, 1], normalise."""
        if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3):
            shape = getattr(frames, "shape", None)
            raise ValueError(
                f"frames: expected a uint8 array (T, H, W, 3), got {type(frames).__name__} "
                f"dtype={getattr(frames, 'dtype', None)} shape={shape}"
            )
        if frames.shape[0] == 0:
            raise ValueError("frames: zero frames")
        size = (self.image_size, self.image_size)
        resized = np.stack(
            [
                np.asarray(Image.fromarray(self._square(f)).resize(size, Image.Resampling.BICUBIC))
                for f in frames
            ]
        )
        # One uint8 -> float32 pass straight into the tower's (T, 3, S, S) layout, then scale and normalise in
        # place: the float operations of (x / 255 - mean) / std in the same order, so the same bits, without the
        # five full-size temporaries that were most of a 384 px clip's preprocessing (170 ms -> 40 ms, 32 frames).
        pixels = torch.from_numpy(resized).permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        pixels.div_(255.0)
        pixels.sub_(torch.tensor(self.image_mean).view(1, 3, 1, 1))
        return pixels.div_(torch.tensor(self.image_std).view(1, 3, 1, 1))

    def decode_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The (width, height) a width x height frame is scaled to on its way to the tower, where that is smaller:
        the longer side at image_size, aspect kept, when padded to a square; image_size x image_size otherwise.
        None when the frame is no larger: upsampling stays with __call__ (PIL bicubic)."""
        side = self.image_size
        if self.pad_to_square:
            longer = max(width, height)
            if longer <= side:
                return None
            return max(1, round(width * side / longer)), max(1, round(height * side / longer))
        if width < side or height < side or (width, height) == (side, side):
            return None
        return side, side

    def _square(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        if not self.pad_to_square or height == width:
            return frame
        side = max(height, width)
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[...] = [int(m * 255) for m in self.image_mean]
        top, left = (side - height) // 2, (side - width) // 2
        canvas[top : top + height, left : left + width] = frame
        return canvas
