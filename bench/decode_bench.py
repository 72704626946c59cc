"""Decode throughput of decord vs PyAV through hicom.data.video.read_video.

    python bench/decode_bench.py [--clips 8] [--frames 32] [--repeats 5]

Renders synthetic clips (10 s, 30 fps, 224x224, H.264 with a keyframe every 2 s, like typical web
video) into a temporary directory, then reads every clip with each decoder, sampling --frames
frames, --repeats times. Prints sampled frames returned per second for each decoder and their
ratio, as medians over the repeats, all measured in this one run so the ratio is comparable
even where absolute speeds are not. Decoders alternate per repeat so drift affects both alike.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from hicom.data.video import DECODERS, decoder_info, read_video

SECONDS, FPS, SIZE, GOP = 10, 30, 224, 60


def render_clip(path: Path, seed: int) -> None:
    """A moving gradient with a drifting block and mild noise: compresses like real footage, not like flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    noise = rng.integers(0, 12, (SIZE, SIZE, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"g": str(GOP), "preset": "veryfast"})
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for t in range(SECONDS * FPS):
            frame = np.empty((SIZE, SIZE, 3), np.uint8)
            frame[..., 0] = (x + 2 * t) % 256
            frame[..., 1] = (y + 3 * t + seed * 40) % 256
            frame[..., 2] = (x + y + t) % 256
            top, left = (5 * t) % (SIZE - 40), (3 * t) % (SIZE - 40)
            frame[top : top + 40, left : left + 40] = 255 - frame[top : top + 40, left : left + 40]
            frame += noise
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="clips to render (default 8)")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per clip (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per decoder (default 5)")
    args = parser.parse_args()
    if min(args.clips, args.frames, args.repeats) < 1:
        parser.error("--clips, --frames and --repeats must be >= 1")

    with tempfile.TemporaryDirectory(prefix="decode_bench_") as tmp:
        began = time.perf_counter()
        clips = [Path(tmp) / f"clip{i}.mp4" for i in range(args.clips)]
        for seed, path in enumerate(clips):
            render_clip(path, seed)
        print(
            f"rendered {args.clips} clips ({SECONDS} s, {FPS} fps, {SIZE}x{SIZE}, keyframe every {GOP} frames) "
            f"in {time.perf_counter() - began:.1f} s; sampling {args.frames} frames per clip"
        )
        # Untimed warm-up read: imports and first-open costs, plus a check that both decoders agree.
        warm = {d: read_video(clips[0], args.frames, decoder=d) for d in DECODERS}
        if warm["decord"].indices != warm["pyav"].indices:
            raise SystemExit(f"decoders disagree on {clips[0]}: {warm['decord'].indices} vs {warm['pyav'].indices}")
        rates: dict[str, list[float]] = {d: [] for d in DECODERS}
        for _ in range(args.repeats):
            for decoder in DECODERS:
                start = time.perf_counter()
                for path in clips:
                    read_video(path, args.frames, decoder=decoder)
                rates[decoder].append(args.clips * args.frames / (time.perf_counter() - start))

    medians = {d: statistics.median(r) for d, r in rates.items()}
    for decoder in DECODERS:
        info = decoder_info(decoder)
        spread = ", ".join(f"{r:.0f}" for r in rates[decoder])
        print(f"{decoder:>6} {info['version']:>7}: {medians[decoder]:8.1f} frames/s (median; runs: {spread})")
    print(f"decord/pyav ratio: {medians['decord'] / medians['pyav']:.2f}")


if __name__ == "__main__":
    main()
