"""Video loading through hicom.data.video.read_video: decord vs PyAV, and scaling in the decoder vs decoding full size.

    python bench/decode_bench.py [--clips 4] [--frames 32] [--repeats 5] [--input-size 384]

Renders synthetic clips (10 s, 30 fps, H.264 with a keyframe every 2 s, like typical web video) at two sizes,
224x224 and 1280x720, into a temporary directory. Each clip is loaded as a model input: read_video sampling
--frames frames, then FramePreprocessor at --input-size (the paper's SigLIP tower takes 384 px), two ways:

    full      decode at the clip's size, convert to RGB, resize in the preprocessor (PIL bicubic): the code
              before scaling in the decoder
    scaled    read_video(scale_for=preprocessor): frames larger than the input are scaled in the decoder
              (swscale), so no full-size RGB frame is made; smaller ones are read as in `full`

Prints frames/s (sampled frames turned into tower input per second) for every decoder, size and way, as
medians over --repeats with each run's value, then the ratios scaled/full per size and decord/pyav. The arms
alternate within every repeat, so drift on a busy machine hits all alike; every number comes from this one
run. At 224 px nothing is larger than a 384 px input, so there `scaled` must read exactly as `full` (a check,
not a timing); at 720p the frame is larger and scaling in the decoder skips the full-size conversion.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from hicom.data.video import DECODERS, FramePreprocessor, decoder_info, read_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import Goal, record  # noqa: E402

SECONDS, FPS, GOP = 10, 30, 60
SIZES = {"224px": (224, 224), "720p": (1280, 720)}
WAYS = ("full", "scaled")


def render_clip(path: Path, width: int, height: int, seed: int) -> None:
    """A moving gradient with a drifting block and mild noise: compresses like real footage, not like flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    noise = rng.integers(0, 12, (height, width, 3), dtype=np.uint8)
    side = min(width, height) // 5
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"g": str(GOP), "preset": "veryfast"})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for t in range(SECONDS * FPS):
            frame = np.empty((height, width, 3), np.uint8)
            frame[..., 0] = (x + 2 * t) % 256
            frame[..., 1] = (y + 3 * t + seed * 40) % 256
            frame[..., 2] = (x + y + t) % 256
            top, left = (5 * t) % (height - side), (3 * t) % (width - side)
            frame[top : top + side, left : left + side] = 255 - frame[top : top + side, left : left + side]
            frame += noise
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def load(path: Path, frames: int, decoder: str, way: str, preprocessor: FramePreprocessor):
    clip = read_video(path, frames, decoder=decoder, scale_for=preprocessor if way == "scaled" else None)
    return clip, preprocessor(clip.frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="clips to render per size (default 4)")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per clip (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per arm (default 5)")
    parser.add_argument("--input-size", type=int, default=384, help="the tower's input size in px (default 384)")
    args = parser.parse_args()
    if min(args.clips, args.frames, args.repeats, args.input_size) < 1:
        parser.error("--clips, --frames, --repeats and --input-size must be >= 1")
    preprocessor = FramePreprocessor(args.input_size)
    arms = [(size, decoder, way) for size in SIZES for decoder in DECODERS for way in WAYS]

    with tempfile.TemporaryDirectory(prefix="decode_bench_") as tmp:
        began = time.perf_counter()
        clips = {size: [Path(tmp) / f"{size}_{i}.mp4" for i in range(args.clips)] for size in SIZES}
        for size, paths in clips.items():
            for seed, path in enumerate(paths):
                render_clip(path, *SIZES[size], seed)
        print(f"decode_bench: rendered {args.clips} clips per size ({', '.join(f'{s} {w}x{h}' for s, (w, h) in SIZES.items())}; "
              f"{SECONDS} s, {FPS} fps, keyframe every {GOP} frames) in {time.perf_counter() - began:.0f} s; "
              f"{args.frames} frames a clip to a {args.input_size} px input")
        # Untimed warm-up: imports and first-open costs, and checks that the arms read the same frames.
        for size, paths in clips.items():
            reads = {(d, w): load(paths[0], args.frames, d, w, preprocessor) for d in DECODERS for w in WAYS}
            indices = {key: clip.indices for key, (clip, _) in reads.items()}
            if len({tuple(i) for i in indices.values()}) != 1:
                raise SystemExit(f"{paths[0]}: the arms sampled different frames: {indices}")
            for decoder in DECODERS:
                full, scaled = reads[(decoder, "full")][1], reads[(decoder, "scaled")][1]
                levels = float((full - scaled).abs().mean()) * 0.5 * 255
                if preprocessor.decode_size(*SIZES[size]) is None and levels != 0:
                    raise SystemExit(f"{size} {decoder}: nothing to scale, yet the scaled read differs ({levels:.3f} levels)")
                print(f"  {size} {decoder}: tower input of the scaled read differs from the full read by "
                      f"{levels:.2f} levels on average")
        rates: dict[tuple, list[float]] = {arm: [] for arm in arms}
        for repeat in range(args.repeats):
            order = arms[repeat % len(arms):] + arms[:repeat % len(arms)]
            for arm in order:
                size, decoder, way = arm
                start = time.perf_counter()
                for path in clips[size]:
                    load(path, args.frames, decoder, way, preprocessor)
                rates[arm].append(args.clips * args.frames / (time.perf_counter() - start))

    median = {arm: statistics.median(r) for arm, r in rates.items()}
    versions = {d: decoder_info(d)["version"] for d in DECODERS}
    print(f"\n{'size':<7}{'decoder':<16}{'way':<8}{'frames/s':>10}   runs")
    for arm in arms:
        size, decoder, way = arm
        print(f"{size:<7}{decoder + ' ' + versions[decoder]:<16}{way:<8}{median[arm]:>10.1f}   "
              + ", ".join(f"{r:.0f}" for r in rates[arm]))
    print()
    goals = []
    for size in SIZES:
        for decoder in DECODERS:
            ratio = median[(size, decoder, "scaled")] / median[(size, decoder, "full")]
            print(f"{size} {decoder}: scaled / full = {ratio:.2f}x")
            if size == "720p":
                goals.append(Goal(f"720p to {args.input_size} px, {decoder}: scaled / full decode", ratio, ">=", 1.0,
                                  "x", f"{median[(size, decoder, 'scaled')]:.0f} vs {median[(size, decoder, 'full')]:.0f} frames/s"))
        print(f"{size} decord / pyav (scaled): {median[(size, 'decord', 'scaled')] / median[(size, 'pyav', 'scaled')]:.2f}x")
    record("decode_bench", goals)


if __name__ == "__main__":
    main()
