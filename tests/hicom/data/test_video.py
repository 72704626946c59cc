"""Visual input reading: frame sampling, decoder agreement, broken inputs, and the preprocessor.

Clips are rendered here with PyAV. Each frame writes its own number in binary as six
black/white stripes (rows 8b..8b+7 are white when bit b is set), so the frame a decoder
returned can be read back from its pixels; the bottom rows are a fixed orange patch that
shows the channel order.
"""
from __future__ import annotations

import json
import pickle
import threading
import time
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SiglipImageProcessor

from hicom.data import video
from hicom.data.video import (
    DECODERS,
    FramePreprocessor,
    VideoReadError,
    decoder_info,
    read_video,
    segment_midpoint_indices,
)

NUM_FRAMES, SIZE, FPS = 48, 64, 8
PATCH_RGB = (200, 60, 30)


def coded_frame(index: int, size: int = SIZE) -> np.ndarray:
    frame = np.zeros((size, size, 3), np.uint8)
    for bit in range(6):
        frame[bit * 8 : bit * 8 + 8] = 235 if (index >> bit) & 1 else 16
    frame[48:] = PATCH_RGB
    return frame


def frame_code(frame: np.ndarray) -> int:
    return sum(int(frame[bit * 8 : bit * 8 + 8].mean() > 128) << bit for bit in range(6))


def render_clip(path: Path, codec: str = "libx264", pix_fmt: str = "yuv420p", faststart: bool = False) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = pix_fmt
        for i in range(NUM_FRAMES):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(coded_frame(i), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "mp4": render_clip(root / "clip.mp4"),
        "faststart": render_clip(root / "faststart.mp4", faststart=True),
        "mkv": render_clip(root / "clip.mkv"),
        "gif": render_clip(root / "clip.gif", codec="gif", pix_fmt="rgb8"),
    }


# --- sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("available", "wanted", "expected"),
    [
        (48, 8, [3, 9, 15, 21, 27, 33, 39, 45]),
        (10, 4, [1, 3, 6, 8]),
        (5, 8, [0, 0, 1, 2, 2, 3, 4, 4]),  # fewer frames than wanted: repeats, still in order
        (7, 7, [0, 1, 2, 3, 4, 5, 6]),  # as many as wanted: every frame once
        (100, 1, [50]),
        (1, 3, [0, 0, 0]),
    ],
)
def test_segment_midpoints_take_the_floor_of_each_segment_centre(available, wanted, expected):
    assert segment_midpoint_indices(available, wanted) == expected


def test_segment_midpoints_are_exactly_k_sorted_in_range_indices():
    for available in range(1, 70):
        for wanted in (1, 2, 3, 8, 16, 32, 64):
            indices = segment_midpoint_indices(available, wanted)
            assert len(indices) == wanted
            assert indices == sorted(indices)
            assert 0 <= indices[0] and indices[-1] <= available - 1


@pytest.mark.parametrize(("available", "wanted", "bad"), [(0, 8, "num_available"), (8, 0, "num_frames")])
def test_segment_midpoints_reject_counts_below_one_naming_them(available, wanted, bad):
    with pytest.raises(ValueError, match=f"{bad} must be >= 1, got 0"):
        segment_midpoint_indices(available, wanted)


# --- video files ----------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
def test_each_decoder_returns_the_sampled_frames_in_rgb(clips, decoder):
    clip = read_video(clips["mp4"], 8, decoder=decoder)
    assert clip.decoder == decoder
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (8, SIZE, SIZE, 3)
    assert clip.indices == segment_midpoint_indices(NUM_FRAMES, 8)
    assert [frame_code(f) for f in clip.frames] == clip.indices
    assert clip.fps == FPS and clip.num_available == NUM_FRAMES
    patch = clip.frames[:, 52:, :].reshape(-1, 3).mean(axis=0)
    assert np.abs(patch - PATCH_RGB).max() < 6, patch


@pytest.mark.parametrize("kind", ["mp4", "mkv"])  # mkv has no frame count in its header
def test_decord_and_pyav_agree_on_indices_and_pixels(clips, kind):
    a = read_video(clips[kind], 16, decoder="decord")
    b = read_video(clips[kind], 16, decoder="pyav")
    assert a.indices == b.indices and a.num_available == b.num_available == NUM_FRAMES
    assert a.fps == b.fps
    assert np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).mean() < 3


@pytest.mark.parametrize("decoder", DECODERS)
def test_more_frames_than_the_video_has_repeats_frames(clips, decoder):
    clip = read_video(clips["mp4"], 64, decoder=decoder)
    assert len(clip.indices) == 64 and clip.frames.shape[0] == 64
    assert [frame_code(f) for f in clip.frames] == clip.indices == segment_midpoint_indices(NUM_FRAMES, 64)


@pytest.mark.parametrize("decoder", DECODERS)
def test_start_end_keep_the_frames_whose_interval_overlaps_the_range(clips, decoder):
    # 8 fps: [1.0 s, 2.0 s) is frames 8..15 exactly; 0.95 s falls in frame 7, 2.01 s in frame 16.
    clip = read_video(clips["mp4"], 8, decoder=decoder, start=1.0, end=2.0)
    assert clip.indices == list(range(8, 16)) and clip.num_available == 8
    assert [frame_code(f) for f in clip.frames] == clip.indices
    wider = read_video(clips["mp4"], 10, decoder=decoder, start=0.95, end=2.01)
    assert wider.indices == list(range(7, 17))


@pytest.mark.parametrize("decoder", DECODERS)
def test_start_end_outside_the_video_are_clamped(clips, decoder):
    clip = read_video(clips["mp4"], 48, decoder=decoder, start=-3.0, end=100.0)
    assert clip.indices == list(range(NUM_FRAMES))
    tail = read_video(clips["mp4"], 4, decoder=decoder, start=5.0)
    assert tail.indices == [41, 43, 45, 47] and tail.num_available == 8


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("start", "end"), [(7.0, None), (2.0, 2.0), (3.0, 1.0)])
def test_time_range_without_frames_is_a_read_error(clips, decoder, start, end):
    with pytest.raises(VideoReadError, match="selects no frames") as err:
        read_video(clips["mp4"], 4, decoder=decoder, start=start, end=end)
    assert err.value.path == str(clips["mp4"])


def test_gif_goes_to_pyav_even_when_decord_is_asked_for(clips):
    # decord 0.6.0 cannot open GIFs; the clip says which decoder actually read it.
    clip = read_video(clips["gif"], 6, decoder="decord")
    assert clip.decoder == "pyav"
    assert [frame_code(f) for f in clip.frames] == clip.indices == segment_midpoint_indices(NUM_FRAMES, 6)


# --- frame directories and images -----------------------------------------------------------


def test_frame_directory_is_read_in_natural_order_at_the_given_fps(tmp_path):
    for i in range(12):  # f0.png .. f11.png: plain string order would put f10 before f2
        Image.fromarray(coded_frame(i)).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = read_video(tmp_path, 4)
    assert clip.decoder == "pil" and clip.fps == 3.0 and clip.num_available == 12
    assert clip.indices == [1, 4, 7, 10]
    assert [frame_code(f) for f in clip.frames] == clip.indices
    ranged = read_video(tmp_path, 3, start=1.0, end=2.0, fps=3.0)
    assert ranged.indices == [3, 4, 5]


def test_times_on_frame_boundaries_survive_floating_point_error(tmp_path):
    # At 25 fps, 1.16 s * 25 is 28.999999999999996 and 1.12 s * 25 is 28.000000000000004;
    # both still mean the boundary of frame 29 and frame 28.
    for i in range(32):
        Image.fromarray(coded_frame(i, size=48)).save(tmp_path / f"{i:03d}.png")
    assert read_video(tmp_path, 3, start=1.16, end=1.28, fps=25.0).indices == [29, 30, 31]
    assert read_video(tmp_path, 3, start=1.0, end=1.12, fps=25.0).indices == [25, 26, 27]


def test_single_image_is_a_one_frame_clip_whatever_is_asked(tmp_path):
    path = tmp_path / "still.jpg"
    Image.fromarray(np.full((30, 50, 3), 90, np.uint8)).save(path)
    clip = read_video(path, 16)
    assert clip.frames.shape == (1, 30, 50, 3) and clip.indices == [0] and clip.decoder == "pil"


def test_unreadable_frame_in_a_directory_is_named(tmp_path):
    Image.fromarray(coded_frame(0)).save(tmp_path / "0001.png")
    (tmp_path / "0002.png").write_bytes(b"not a png")
    with pytest.raises(VideoReadError, match="PIL could not read") as err:
        read_video(tmp_path, 2)
    assert err.value.path == str(tmp_path / "0002.png")


def test_frames_of_different_sizes_in_a_directory_are_a_read_error(tmp_path):
    Image.fromarray(coded_frame(0)).save(tmp_path / "1.png")
    Image.fromarray(coded_frame(1, size=48)).save(tmp_path / "2.png")
    with pytest.raises(VideoReadError, match=r"frame size \(48, 48\) differs from \(64, 64\)") as err:
        read_video(tmp_path, 2)
    assert err.value.path == str(tmp_path / "2.png")


def test_directory_without_images_is_a_read_error(tmp_path):
    with pytest.raises(VideoReadError, match="no image files") as err:
        read_video(tmp_path, 4)
    assert err.value.path == str(tmp_path)


# --- broken inputs --------------------------------------------------------------------------


def _broken(kind: str, decoder: str, clips: dict[str, Path], tmp_path: Path) -> tuple[Path, str]:
    """A broken input and the reason its error must give."""
    if kind == "missing":
        return tmp_path / "missing.mp4", "no such file"
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
        return path, r"empty file \(0 bytes\)"
    if kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
        return path, "could not open"
    source = clips["faststart" if kind == "truncated_faststart" else "mp4"].read_bytes()
    path.write_bytes(source[: len(source) // 2])
    # moov at the end: the index is gone and opening fails. moov first: PyAV opens it and fails
    # decoding; decord reads every packet when it opens a file, so it fails there.
    return path, "failed to decode frames" if (kind, decoder) == ("truncated_faststart", "pyav") else "could not open"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "truncated", "truncated_faststart"])
def test_broken_video_raises_read_error_naming_file_and_reason(clips, tmp_path, decoder, kind):
    path, reason = _broken(kind, decoder, clips, tmp_path)
    with pytest.raises(VideoReadError, match=reason) as err:
        read_video(path, 8, decoder=decoder)
    assert err.value.path == str(path)
    assert str(path) in str(err.value)


def test_unknown_decoder_is_a_value_error_naming_it(clips):
    with pytest.raises(ValueError, match="unknown decoder 'opencv'"):
        read_video(clips["mp4"], 8, decoder="opencv")


def test_read_that_does_not_finish_in_time_is_abandoned_with_a_read_error(clips, monkeypatch):
    release = threading.Event()

    def hung_decode(*args, **kwargs):
        release.wait(10)
        raise AssertionError("the abandoned read should never be used")

    monkeypatch.setattr(video, "_decode_decord", hung_decode)
    began = time.monotonic()
    try:
        with pytest.raises(VideoReadError, match=r"timed out after 0.2s") as err:
            read_video(clips["mp4"], 8, decoder="decord", timeout_s=0.2)
    finally:
        release.set()
    assert time.monotonic() - began < 2
    assert err.value.path == str(clips["mp4"])


# --- input bounds (params.yaml data.limits) ------------------------------------------------


def huge_frame_video(path: Path, side: int = 8192) -> Path:
    """One side x side frame in a ~200 KB mp4 (a flat grey frame compresses to almost nothing); encoding it
    peaks near 450 MB, decoding 8 samples of it near 2 GB."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
        frame = av.VideoFrame(side, side, "gray")
        frame.planes[0].update(bytes(side * side))
        for packet in stream.encode(frame.reformat(format="yuv420p")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> Path:
    return huge_frame_video(tmp_path_factory.mktemp("huge") / "huge.mp4")


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_huge_frame_video_is_rejected_naming_it_before_any_frame_is_decoded(huge, decoder, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("frames were decoded")

    monkeypatch.setattr(video, f"_decode_{decoder}", no_decoding)
    with pytest.raises(VideoReadError, match=r"8192x8192 = 67108864 pixels are over "
                                             r"data.limits.max_frame_pixels=8294400") as err:
        read_video(huge, 8, decoder=decoder)
    assert err.value.path == str(huge)


def test_bounds_on_file_size_duration_and_image_size_name_the_input_and_the_key(clips, tmp_path):
    from hicom.data.settings import ReadLimits

    with pytest.raises(VideoReadError, match=r"over data.limits.max_file_bytes=100"):
        read_video(clips["mp4"], 8, limits=ReadLimits(max_file_bytes=100))
    with pytest.raises(VideoReadError, match=r"6 s long, over data.limits.max_duration_s=5"):  # 48 frames at 8 fps
        read_video(clips["mp4"], 8, limits=ReadLimits(max_duration_s=5))
    Image.fromarray(coded_frame(1)).save(tmp_path / "frame.png")
    with pytest.raises(VideoReadError, match=r"64x64 = 4096 pixels are over data.limits.max_frame_pixels=4000"):
        read_video(tmp_path / "frame.png", 8, limits=ReadLimits(max_frame_pixels=4000))
    assert read_video(clips["mp4"], 8, limits=ReadLimits(max_frame_pixels=4096)).frames.shape == (8, 64, 64, 3)


def test_read_error_survives_pickling_for_dataloader_workers():
    restored = pickle.loads(pickle.dumps(VideoReadError("/data/x.mp4", "empty file (0 bytes)")))
    assert (restored.path, restored.reason) == ("/data/x.mp4", "empty file (0 bytes)")
    assert str(restored) == "cannot read /data/x.mp4: empty file (0 bytes)"


def test_decoder_info_reports_the_installed_versions():
    assert decoder_info("decord") == {"decoder": "decord", "version": decord.__version__}
    assert decoder_info("pyav") == {"decoder": "pyav", "version": av.__version__}
    with pytest.raises(ValueError, match="unknown decoder 'cv2'"):
        decoder_info("cv2")


# --- preprocessor ---------------------------------------------------------------------------

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def test_preprocessor_output_shape_dtype_and_normalisation():
    frames = np.stack([np.full((20, 20, 3), 255, np.uint8), np.zeros((20, 20, 3), np.uint8)])
    out = FramePreprocessor(16, CLIP_MEAN, CLIP_STD)(frames)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32 and out.is_contiguous()
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(out[0], ((1 - mean) / std).expand(3, 16, 16))
    torch.testing.assert_close(out[1], (-mean / std).expand(3, 16, 16))


@pytest.mark.parametrize("frames,size,mean,std", [(1, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                                                  (5, 72, CLIP_MEAN, CLIP_STD), (3, 384, (0.0, 0.25, 1.0), (1.0, 0.1, 3.0))])
def test_preprocessor_writes_the_same_bits_as_scaling_then_normalising_on_fresh_tensors(frames, size, mean, std):
    # Features, cached features and trained weights stay the same bytes: the in-place path must not round differently.
    pixels = np.random.default_rng(size).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    reference = (torch.from_numpy(pixels).float() / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    out = FramePreprocessor(size, mean, std)(pixels)
    assert out.is_contiguous() and torch.equal(out, reference.permute(0, 3, 1, 2))


def test_padding_puts_mean_coloured_bands_above_and_below_a_wide_frame():
    wide = np.full((1, 32, 64, 3), 255, np.uint8)  # white, twice as wide as tall
    out = FramePreprocessor(32)(wide)[0]
    band = (127 / 255 - 0.5) / 0.5  # background int(0.5 * 255), normalised
    white = (1.0 - 0.5) / 0.5
    assert torch.allclose(out[:, :6], torch.tensor(band), atol=1e-6)  # top band
    assert torch.allclose(out[:, -6:], torch.tensor(band), atol=1e-6)  # bottom band
    assert torch.allclose(out[:, 10:22], torch.tensor(white), atol=1e-6)  # image, full width
    plain = FramePreprocessor(32, pad_to_square=False)(wide)[0]
    assert torch.allclose(plain, torch.tensor(white), atol=1e-6)  # stretched, no bands


def test_unpadded_preprocessor_matches_transformers_siglip_processor():
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    ours = FramePreprocessor(24, CLIP_MEAN, CLIP_STD, pad_to_square=False)
    theirs = SiglipImageProcessor(
        size={"height": 24, "width": 24}, resample=3, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)
    )
    expected = theirs(list(frames), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours(frames), expected, atol=1e-5, rtol=0)


def test_preprocessor_config_round_trips_through_transformers(tmp_path):
    ours = FramePreprocessor(24, CLIP_MEAN, CLIP_STD, pad_to_square=False)
    ours.save_pretrained(tmp_path / "ours")
    assert FramePreprocessor.from_pretrained(tmp_path / "ours") == ours
    loaded = SiglipImageProcessor.from_pretrained(tmp_path / "ours")
    assert loaded.size["height"] == loaded.size["width"] == 24
    assert list(loaded.image_mean) == list(CLIP_MEAN) and list(loaded.image_std) == list(CLIP_STD)
    # transformers keeps our extra key when it saves again
    loaded.save_pretrained(tmp_path / "again")
    assert FramePreprocessor.from_pretrained(tmp_path / "again") == ours
    # a config transformers wrote on its own reads back, with our default pad_to_square=True
    SiglipImageProcessor(
        size={"height": 24, "width": 24}, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)
    ).save_pretrained(tmp_path / "theirs")
    assert FramePreprocessor.from_pretrained(tmp_path / "theirs") == FramePreprocessor(24, CLIP_MEAN, CLIP_STD)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no preprocessor_config.json"),
        ("{not json", "not valid JSON"),
        (json.dumps({"size": {"height": 24, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}), "'size'"),
        (json.dumps({"size": {"height": 24, "width": 24}, "image_std": [0.5] * 3}), "missing field 'image_mean'"),
        (json.dumps({"size": {"height": 24, "width": 24}, "image_mean": [0.5] * 2, "image_std": [0.5] * 3}), "3 values"),
        (
            json.dumps({"size": {"height": 8, "width": 8}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_normalize": False}),
            "'do_normalize' is False",
        ),
    ],
)
def test_bad_preprocessor_config_is_an_error_naming_the_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "preprocessor_config.json").write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        FramePreprocessor.from_pretrained(tmp_path)
    assert str(tmp_path / "preprocessor_config.json") in str(err.value)


def test_preprocessor_rejects_frames_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="dtype=float32 shape=\\(2, 8, 8, 3\\)"):
        FramePreprocessor(8)(np.zeros((2, 8, 8, 3), np.float32))


# --- scaling in the decoder and rotation -------------------------------------------------------------


def render_scene(path: Path, width: int, height: int, rotation: int = 0, frames: int = 12) -> Path:
    """Smooth gradients with a bright block moving across: what a real clip looks like to a bilinear/bicubic
    filter (no single-pixel detail), with a display rotation in the container where asked."""
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        if rotation:
            stream.set_display_rotation(rotation)
        for t in range(frames):
            frame = np.empty((height, width, 3), np.uint8)
            frame[..., 0] = 255 * x // width
            frame[..., 1] = 255 * y // height
            frame[..., 2] = (128 + 4 * t) % 256
            left = (t * width) // (2 * frames)
            frame[height // 4 : height // 2, left : left + width // 4] = (250, 250, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(("pad", "size", "expected"), [
    (True, (1280, 720), (64, 36)), (True, (720, 1280), (36, 64)), (True, (64, 48), None), (True, (65, 10), (64, 10)),
    (False, (1280, 720), (64, 64)), (False, (64, 64), None), (False, (100, 50), None),
])
def test_decode_size_is_what_the_preprocessor_would_shrink_the_frame_to(pad, size, expected):
    assert FramePreprocessor(64, pad_to_square=pad).decode_size(*size) == expected


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_rotated_video_comes_out_upright_from_pyav_and_the_same_from_decord(tmp_path, rotation):
    upright = read_video(render_scene(tmp_path / "plain.mp4", 48, 32), 4, decoder="pyav").frames
    path = render_scene(tmp_path / f"rot{rotation}.mp4", 48, 32, rotation)  # the same pictures, a display matrix
    turned = read_video(path, 4, decoder="pyav").frames
    assert np.array_equal(turned, np.rot90(upright, rotation // 90, axes=(1, 2)))
    if rotation == 180:  # decord 0.6.0's own frame-size check fails on a 180-degree stream: a named read error
        with pytest.raises(VideoReadError, match="rot180.mp4: decord failed to decode frames"):
            read_video(path, 4, decoder="decord")
    else:
        assert np.array_equal(read_video(path, 4, decoder="decord").frames, turned)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("width", "height", "rotation"), [(160, 90, 0), (90, 160, 0), (144, 144, 0), (160, 96, 90)])
@pytest.mark.parametrize("pad", [True, False])
def test_frames_larger_than_the_input_are_scaled_in_the_decoder_to_what_the_preprocessor_makes_of_them(
        tmp_path, decoder, width, height, rotation, pad):
    path = render_scene(tmp_path / "big.mp4", width, height, rotation)
    preprocessor = FramePreprocessor(64, pad_to_square=pad)
    full = read_video(path, 6, decoder=decoder)
    scaled = read_video(path, 6, decoder=decoder, scale_for=preprocessor)
    shown = full.frames.shape[2], full.frames.shape[1]
    assert shown == ((height, width) if rotation % 180 else (width, height))
    assert scaled.frames.shape[1:3] == preprocessor.decode_size(*shown)[::-1]
    assert scaled.indices == full.indices
    # The tower sees the same picture: swscale's bilinear against PIL's bicubic, a few levels apart.
    levels = (preprocessor(scaled.frames) - preprocessor(full.frames)).abs() * 0.5 * 255
    assert levels.mean() < 3, levels.mean()


@pytest.mark.parametrize("pad", [True, False])
def test_both_decoders_scale_to_nearly_the_same_pixels(tmp_path, pad):
    path = render_scene(tmp_path / "big.mp4", 200, 120)
    preprocessor = FramePreprocessor(64, pad_to_square=pad)
    a, b = (read_video(path, 6, decoder=d, scale_for=preprocessor) for d in DECODERS)
    assert a.frames.shape == b.frames.shape
    assert np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).mean() < 2


@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_no_larger_than_the_input_are_read_exactly_as_without_scaling(clips, decoder):
    # The synthetic world's 64 px clips on the tiny tower's 72 px input: upsampling stays with the preprocessor.
    plain = read_video(clips["mp4"], 8, decoder=decoder)
    for side in (SIZE, 72):
        assert np.array_equal(read_video(clips["mp4"], 8, decoder=decoder, scale_for=FramePreprocessor(side)).frames,
                              plain.frames)


def test_widths_decord_cannot_scale_to_are_exactly_the_predicted_ones(tmp_path):
    """decord 0.6.0 takes an RGB row's padded stride over the width as the channel count when it divides: 72 px
    (the tiny tower's input) fails its own size check. read_video decodes those widths at full size instead."""
    path = render_scene(tmp_path / "wide.mp4", 400, 300, frames=3)
    failing = []
    for width in range(2, 200):
        try:
            frames = decord.VideoReader(str(path), width=width, height=20).get_batch([0, 1]).asnumpy()
            assert frames.shape == (2, 20, width, 3)
        except decord.DECORDError:
            failing.append(width)
    assert failing == [w for w in range(2, 200) if not video._decord_scales_to(w)]
    assert 72 in failing and 64 not in failing


@pytest.mark.parametrize("side", [72, 48, 64])
def test_a_shrink_to_a_width_decord_cannot_scale_to_still_reads_with_both_decoders(tmp_path, side):
    path = render_scene(tmp_path / "big.mp4", 128, 128)
    preprocessor = FramePreprocessor(side)
    clips = {d: read_video(path, 4, decoder=d, scale_for=preprocessor) for d in DECODERS}
    assert clips["pyav"].frames.shape[1:3] == (side, side)
    expected = (side, side) if video._decord_scales_to(side) else (128, 128)
    assert clips["decord"].frames.shape[1:3] == expected
    levels = (preprocessor(clips["decord"].frames) - preprocessor(clips["pyav"].frames)).abs() * 0.5 * 255
    assert levels.mean() < 3
