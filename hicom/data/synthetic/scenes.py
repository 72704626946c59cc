"""The scene model (ground truth of one clip) and how a scene is drawn from its own RNG stream."""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from hicom.data.synthetic.config import WorldConfig

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (150, 60, 200),
}
MOTIONS = ("static", "left", "right", "up", "down")
SIZES = ("small", "large")
BACKGROUNDS = {"black": (10, 10, 10), "dark grey": (60, 60, 60), "dark brown": (70, 45, 25)}

_SIZE_FRACTION = {"small": 0.08, "large": 0.14}  # half-extent as a share of the frame side
_STEP = {"static": (0, 0), "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_LATE_OR_EARLY_P = 0.6  # chance that a scene has an object that appears late (and, separately, one that leaves early)


@dataclass(frozen=True)
class SceneObject:
    """One shape. (x0, y0) is its centre at frame `appear`; it moves `speed` pixels a frame in `motion`."""

    shape: str
    colour: str
    size: str  # "small" | "large"
    x0: int
    y0: int
    motion: str
    speed: float
    appear: int  # first visible frame
    disappear: int  # last visible frame, inclusive

    def __post_init__(self):
        for name, choices in (("shape", SHAPES), ("colour", tuple(COLOURS)), ("size", SIZES), ("motion", MOTIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"scene object {name} {getattr(self, name)!r} is not one of {', '.join(choices)}")
        if not 0 <= self.appear <= self.disappear:
            raise ValueError(f"scene object {self.name}: needs 0 <= appear <= disappear, "
                             f"got appear={self.appear!r}, disappear={self.disappear!r}")

    def visible(self, t: int) -> bool:
        return self.appear <= t <= self.disappear

    def position(self, t: int) -> tuple[int, int]:
        """Integer centre at frame t (extrapolated outside the visible span)."""
        dx, dy = _STEP[self.motion]
        k = self.speed * (t - self.appear)
        return round(self.x0 + dx * k), round(self.y0 + dy * k)

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Ground truth of one clip; saved as JSON so every question can be checked against it."""

    id: str
    objects: tuple[SceneObject, ...]
    num_frames: int
    fps: int
    size: int
    background: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"id": self.id, "num_frames": self.num_frames, "fps": self.fps, "size": self.size,
                "background": list(self.background), "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        expected = {"id", "num_frames", "fps", "size", "background", "objects"}
        if set(d) != expected:
            raise ValueError(f"scene {d.get('id')!r}: keys must be {sorted(expected)}, "
                             f"missing {sorted(expected - set(d))}, unknown {sorted(set(d) - expected)}")
        objects = tuple(SceneObject(**o) for o in d["objects"])
        return cls(d["id"], objects, d["num_frames"], d["fps"], d["size"], tuple(d["background"]))


def object_radius(size_name: str, frame_size: int) -> int:
    """Half-extent in pixels of a small or large object in a frame of the given side."""
    return max(2, round(frame_size * _SIZE_FRACTION[size_name]))


def _apart(a: SceneObject, b: SceneObject, frame_size: int) -> bool:
    """True when the two objects' boxes never touch while both are on screen (so none hides another)."""
    gap = object_radius(a.size, frame_size) + object_radius(b.size, frame_size) + 1
    for t in range(max(a.appear, b.appear), min(a.disappear, b.disappear) + 1):
        (ax, ay), (bx, by) = a.position(t), b.position(t)
        if max(abs(ax - bx), abs(ay - by)) <= gap:
            return False
    return True


def _draw_object(rng: random.Random, combo: tuple[str, str], appear: int, disappear: int, s: int) -> SceneObject:
    """Size, motion, speed and start so the whole shape stays inside the frame while visible."""
    size = rng.choice(SIZES)
    motion = rng.choice(MOTIONS)
    h = object_radius(size, s)
    lo, hi = h + 1, s - 2 - h  # centre range that keeps a 1-pixel margin
    span = disappear - appear
    x0, y0, speed = rng.randint(lo, hi), rng.randint(lo, hi), 0.0
    if motion != "static":
        max_travel = min(hi - lo, s / 16 * span)  # at most s/16 pixels a frame, so motion stays smooth
        travel = rng.uniform(min(max_travel, s // 4), max_travel)
        speed = int(travel / span * 100) / 100  # two decimals, rounded down so the path fits
        reach = math.ceil(speed * span)
        dx, dy = _STEP[motion]
        start = rng.randint(lo, hi - reach) if dx + dy > 0 else rng.randint(lo + reach, hi)
        x0, y0 = (start, y0) if dx else (x0, start)
    return SceneObject(combo[0], combo[1], size, x0, y0, motion, speed, appear, disappear)


def make_scene(rng: random.Random, cfg: WorldConfig, scene_id: str) -> Scene:
    """A scene of non-overlapping objects with distinct (shape, colour); maybe one late and one early object."""
    t_last = cfg.num_frames - 1
    combos = [(shape, colour) for shape in SHAPES for colour in COLOURS]
    background = BACKGROUNDS[rng.choice(sorted(BACKGROUNDS))]
    for _ in range(100):
        n = rng.randint(cfg.min_objects, cfg.max_objects)
        order = rng.sample(range(n), n)
        late = order[0] if rng.random() < _LATE_OR_EARLY_P else None
        early = order[-1] if n > 1 and rng.random() < _LATE_OR_EARLY_P else None
        chosen = rng.sample(combos, n)
        objects: list[SceneObject] = []
        for i, combo in enumerate(chosen):
            appear, disappear = 0, t_last
            if i == late:  # appears strictly after the middle frame
                appear = rng.randint(cfg.num_frames // 2 + 1, (3 * cfg.num_frames) // 4)
            if i == early:  # gone before the middle frame
                disappear = rng.randint(cfg.num_frames // 4, cfg.num_frames // 2 - 1)
            for _ in range(100):
                obj = _draw_object(rng, combo, appear, disappear, cfg.size)
                if all(_apart(obj, other, cfg.size) for other in objects):
                    objects.append(obj)
                    break
            else:
                break  # no room for this object: redraw the whole scene
        if len(objects) == n:
            return Scene(scene_id, tuple(objects), cfg.num_frames, cfg.fps, cfg.size, background)
    raise RuntimeError(f"scene {scene_id}: cannot place {cfg.max_objects} non-overlapping objects "
                       f"in a {cfg.size}x{cfg.size} frame; raise data.synthetic.size or lower max_objects")
