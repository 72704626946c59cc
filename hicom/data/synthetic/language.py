"""Text from ground truth: captions, instruction-description pairs, short-answer and multiple-choice questions."""
from __future__ import annotations

import random
from dataclasses import dataclass

from hicom.data.synthetic.config import MAX_OBJECTS, NUMBERS
from hicom.data.synthetic.scenes import BACKGROUNDS, COLOURS, SHAPES, Scene, SceneObject

_MOTION_PHRASE = {"static": "it stays still", "left": "it moves left", "right": "it moves right",
                  "up": "it moves up", "down": "it moves down"}
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")
CELLS = tuple("centre" if (r, c) == ("middle", "centre") else f"{r} {c}" for r in _ROWS for c in _COLS)
IMAGE_PROMPTS = ("Describe the image.", "What is shown in this picture?", "Give a short description of the image.",
                 "What do you see in this frame?", "Briefly describe what is in the picture.")
VIDEO_PROMPTS = ("Describe the video.", "What happens in this clip?", "Give a short description of the video.",
                 "Summarise what happens in the video.", "Describe the objects and how they move.")
LETTERS = "ABCD"
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def cell(size: int, x: int, y: int) -> str:
    """Which ninth of the frame a point lies in ("top left", ..., "centre")."""
    return CELLS[3 * min(2, 3 * y // size) + min(2, 3 * x // size)]


def _seconds(scene: Scene, frame: int) -> str:
    return f"{frame / scene.fps:.1f} s"


def _cell_at(scene: Scene, obj: SceneObject, t: int) -> str:
    return cell(scene.size, *obj.position(t))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _story(scene: Scene, obj: SceneObject, article: str) -> str:
    """One sentence: when the object is on screen, where, and how it moves."""
    subject = f"{article} {obj.size} {obj.colour} {obj.shape}"
    first, last = _cell_at(scene, obj, obj.appear), _cell_at(scene, obj, obj.disappear)
    if obj.motion == "static":
        path = "stays still" if obj.appear else f"stays still in the {first}"
    elif first == last:
        path = f"moves {obj.motion} within the {first}"
    else:
        path = f"moves {obj.motion} to the {last}" if obj.appear \
            else f"moves {obj.motion} from the {first} to the {last}"
    text = f"{subject} appears at {_seconds(scene, obj.appear)} in the {first} and {path}" if obj.appear \
        else f"{subject} {path}"
    if obj.disappear < scene.num_frames - 1:
        text += f" and disappears at {_seconds(scene, obj.disappear + 1)}"
    return text + "."


def _background_name(scene: Scene) -> str:
    names = [name for name, rgb in BACKGROUNDS.items() if tuple(rgb) == tuple(scene.background)]
    return names[0] if names else "plain"


def caption(scene: Scene, t: int | None = None) -> str:
    """Frame t: what is on screen then and where. None: the whole clip, with motion and timing."""
    background = _background_name(scene)
    if t is None:
        stories = " ".join(_story(scene, o, "A") for o in scene.objects)
        return f"A {scene.num_frames / scene.fps:.1f}-second clip on a {background} background. {stories}"
    if not 0 <= t < scene.num_frames:
        raise ValueError(f"scene {scene.id}: frame {t} outside [0, {scene.num_frames})")
    shown = [o for o in scene.objects if o.visible(t)]
    if not shown:
        return f"An empty {background} background."
    count = NUMBERS[len(shown)].capitalize()
    parts = [f"a {o.size} {o.colour} {o.shape} in the {_cell_at(scene, o, t)}" for o in shown]
    return f"{count} object{'s' if len(shown) > 1 else ''} on a {background} background: {_join(parts)}."


def _moments(scene: Scene) -> list[tuple[str, str, int]]:
    """(phrase, target, frame) for the three moments questions refer to."""
    return [("at the start of the video", "the start of the video", 0),
            ("in the middle of the video", "the middle of the video", scene.num_frames // 2),
            ("at the end of the video", "the end of the video", scene.num_frames - 1)]


def _late(scene: Scene) -> SceneObject | None:
    return next((o for o in scene.objects if o.appear > 0), None)


def _early(scene: Scene) -> SceneObject | None:
    return next((o for o in scene.objects if o.disappear < scene.num_frames - 1), None)


def instruction_pairs(scene: Scene, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n distinct (instruction, description) pairs about one object or one moment (fewer if the scene has fewer)."""
    pairs = []
    last = scene.num_frames - 1
    for o in scene.objects:
        full = f"{o.size} {o.colour} {o.shape}"
        first = _cell_at(scene, o, o.appear)
        pairs.append((f"What does {o.name} do?", _story(scene, o, "The")))
        if o.appear:
            pairs.append((f"Where is the {full} when it appears?",
                          f"The {full} appears in the {first} at {_seconds(scene, o.appear)}."))
        else:
            pairs.append((f"Where is the {full} at the start?", f"At the start the {full} is in the {first}."))
        span = ("for the whole clip" if o.appear == 0 and o.disappear == last
                else f"from {_seconds(scene, o.appear)} until the end" if o.appear
                else f"from the start until {_seconds(scene, o.disappear + 1)}")
        pairs.append((f"When is {o.name} visible?", f"{o.name.capitalize()} is visible {span}."))
    pairs += [("Describe the start of the video.", caption(scene, 0)),
              ("What is visible in the middle of the video?", caption(scene, scene.num_frames // 2)),
              ("Describe the end of the video.", caption(scene, last))]
    late, early = _late(scene), _early(scene)
    pairs.append(("What appears in the second half of the video?",
                  _story(scene, late, "A") if late else "Nothing new appears in the second half of the video."))
    pairs.append(("What disappears before the middle of the video?",
                  _story(scene, early, "The") if early else "Nothing disappears before the middle of the video."))
    pairs += [(q.text, _statement(q)) for q in _questions(scene) if q.family in _STATEMENTS]
    return rng.sample(pairs, min(n, len(pairs)))


# One-object questions answered by a sentence that names the object with the asked attribute: conditional
# pre-training then teaches the compressor to keep, for the instruction's object, exactly what is asked.
_STATEMENTS = {
    "colour_of_shape": lambda q: f"It is {q.target}.",
    "shape_of_colour": lambda q: f"It is {q.target}.",
    "motion_of_object": lambda q: f"{q.target.capitalize()} {q.answer.removeprefix('it ')}.",
    "start_cell": lambda q: f"{q.target.capitalize()} is in the {q.answer}.",
    "end_cell": lambda q: f"{q.target.capitalize()} is in the {q.answer}.",
    "event_colour": lambda q: f"That object is {q.answer}.",
    "event_shape": lambda q: f"That object is a {q.answer}.",
}


def _statement(q: _Question) -> str:
    return _STATEMENTS[q.family](q)


@dataclass(frozen=True)
class Family:
    """A kind of question with its own chance level; `tested`: asked in the held-out test."""

    name: str
    kind: str  # "object" | "moment" | "existence"
    tested: bool


# All but colour_seen and count bind an object: answering needs one object's attribute tied to another (its
# shape to its colour, its name to its motion or place) in a scene of several objects, which an unconditional
# compressor at a fixed token budget may average away (params.yaml: pipeline.ablation_sweep.binding_families).
FAMILIES = {f.name: f for f in (
    Family("colour_seen", "existence", tested=True),      # which colour can be seen at all
    Family("colour_of_shape", "object", tested=True),     # what colour is the square?
    Family("shape_of_colour", "object", tested=True),     # what shape is the red object?
    Family("motion_of_object", "object", tested=True),    # how does the red square move?
    Family("start_cell", "object", tested=True),          # where is the red square at the start?
    Family("event_colour", "moment", tested=True),        # what colour is the object that appears late?
    Family("end_cell", "object", tested=False),
    Family("size", "object", tested=False),
    Family("appearance_time", "object", tested=False),
    Family("object_by_motion", "object", tested=False),
    Family("count", "moment", tested=False),              # answerable from a text prior; not tested
    Family("object_in_cell", "moment", tested=False),
    Family("event_object", "moment", tested=False),
    Family("event_shape", "moment", tested=False),
)}
TEST_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.tested)
# Families whose question singles out no object by how it looks (which colours can be seen, how many objects, the
# object that appears late, the one that moves left): one frame does not tell which object they are about.
UNNAMED_FAMILIES = ("colour_seen", "count", "event_object", "event_colour", "event_shape", "object_by_motion")


@dataclass(frozen=True)
class _Question:
    """A short-answer question; `near` are wrong answers present in the scene, `far` other wrong answers."""

    family: str
    target: str
    text: str
    answer: str
    near: tuple[str, ...] = ()
    far: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return FAMILIES[self.family].kind

    @property
    def multiple_choice(self) -> bool:
        return len(set(self.near) | set(self.far)) >= len(LETTERS) - 1


def _others(values, answer: str) -> tuple[str, ...]:
    """Distinct values except the answer, in first-seen order."""
    return tuple(v for v in dict.fromkeys(values) if v != answer)


def _questions(scene: Scene) -> list[_Question]:
    """Every question whose answer is fixed by one object or one moment of the scene."""
    objs, last = scene.objects, scene.num_frames - 1
    names = [o.name for o in objs]
    absent = [f"the {c} {s}" for s in SHAPES for c in COLOURS if f"the {c} {s}" not in names]
    qs: list[_Question] = []

    def which(family: str, target: str, text: str, obj: SceneObject) -> _Question:
        return _Question(family, target, text, obj.name, _others(names, obj.name), tuple(absent))

    def attribute(family: str, target: str, text: str, value: str, present, universe) -> _Question:
        return _Question(family, target, text, value, _others(present, value), _others(universe, value))

    for o in objs:
        motion = _MOTION_PHRASE[o.motion]
        qs.append(attribute("motion_of_object", o.name, f"How does {o.name} move?", motion,
                            [_MOTION_PHRASE[p.motion] for p in objs], _MOTION_PHRASE.values()))
        start_text = f"Where is {o.name} when it first appears?" if o.appear \
            else f"Where is {o.name} at the start of the video?"
        seen = [_cell_at(scene, p, o.appear) for p in objs if p.visible(o.appear)]
        qs.append(attribute("start_cell", o.name, start_text, _cell_at(scene, o, o.appear), seen, CELLS))
        if o.motion != "static":
            end_text = f"Where is {o.name} at the end of the video?" if o.disappear == last \
                else f"Where is {o.name} just before it disappears?"
            seen = [_cell_at(scene, p, o.disappear) for p in objs if p.visible(o.disappear)]
            qs.append(attribute("end_cell", o.name, end_text, _cell_at(scene, o, o.disappear), seen, CELLS))
        qs.append(_Question("size", o.name, f"Is {o.name} small or large?", o.size))
        when = "at the start" if o.appear == 0 else f"after about {o.appear / scene.fps:.1f} seconds"
        qs.append(_Question("appearance_time", o.name, f"When does {o.name} appear?", when))
        if sum(p.shape == o.shape for p in objs) == 1:
            qs.append(attribute("colour_of_shape", o.name, f"What colour is the {o.shape}?", o.colour,
                                [p.colour for p in objs], COLOURS))
        if sum(p.colour == o.colour for p in objs) == 1:
            qs.append(attribute("shape_of_colour", o.name, f"What shape is the {o.colour} object?", o.shape,
                                [p.shape for p in objs], SHAPES))
        if sum(p.motion == o.motion for p in objs) == 1:
            verb = "stays still" if o.motion == "static" else f"moves {o.motion}"
            qs.append(which("object_by_motion", o.name, f"Which object {verb}?", o))

    present = list(dict.fromkeys(o.colour for o in objs))
    absent_colours = [c for c in COLOURS if c not in present]
    for colour in present:  # one text, several right answers: a choice offers only one of them
        qs.append(_Question("colour_seen", "the whole video", "Which colour can be seen in the video?", colour,
                            (), tuple(absent_colours)))

    counts = [NUMBERS[sum(p.visible(t) for p in objs)] for _, _, t in _moments(scene)]
    for phrase, target, t in _moments(scene):
        qs.append(attribute("count", target, f"How many objects are visible {phrase}?",
                            NUMBERS[sum(p.visible(t) for p in objs)], counts, NUMBERS[:MAX_OBJECTS + 1]))
        shown = [p for p in objs if p.visible(t)]
        cells = [_cell_at(scene, p, t) for p in shown]
        for p, where in zip(shown, cells):
            if cells.count(where) == 1:
                qs.append(which("object_in_cell", f"the {where} {phrase}",
                                f"Which object is in the {where} {phrase}?", p))

    events = ((_late(scene), "appears in the second half of the video", "the second half of the video"),
              (_early(scene), "disappears before the middle of the video", "the first half of the video"))
    for obj, event, target in events:
        if obj is None:
            continue
        qs.append(which("event_object", target, f"Which object {event}?", obj))
        qs.append(attribute("event_colour", target, f"What colour is the object that {event}?", obj.colour,
                            [p.colour for p in objs], COLOURS))
        qs.append(attribute("event_shape", target, f"What shape is the object that {event}?", obj.shape,
                            [p.shape for p in objs], SHAPES))
    return qs


def in_clip_options(scene: Scene, question: str, options: list[str]) -> list[bool]:
    """Per option, whether the clip holds that value for the question (the answer or an in-scene distractor).

    A pick among only these needs the scene's values but neither the binding nor the moment the question asks
    about, so 1 / (their count) is the floor a binding family must beat, above its 1/4 chance.
    """
    asked = [q for q in _questions(scene) if q.text == question]
    if not asked:
        raise ValueError(f"scene {scene.id}: asks no question {question!r}")
    held = {value for q in asked for value in (q.answer, *q.near)}
    return [option in held for option in options]


def unnamed_questions(scene: Scene) -> list[str]:
    """The texts of the scene's questions that single out no object by how it looks (UNNAMED_FAMILIES)."""
    return sorted({q.text for q in _questions(scene) if q.family in UNNAMED_FAMILIES})


def qa_turns(scene: Scene, rng: random.Random, k: int) -> list[tuple[str, str]]:
    """k distinct short-answer questions about one object or one moment, answered from ground truth."""
    questions = _questions(scene)
    picked = rng.sample(questions, min(k, len(questions)))
    return [(q.text, q.answer[0].upper() + q.answer[1:] + ".") for q in picked]


def mcq_prompt(question: str, options: list[str]) -> str:
    """The one multiple-choice prompt format, shared by instruction tuning and evaluation.

    conversation.extract_guide reduces it to the bare question (option lines and this instruction drop out).
    """
    if not 1 <= len(options) <= len(LETTERS):
        raise ValueError(f"mcq_prompt: needs 1 to {len(LETTERS)} options, got {len(options)}")
    return f"{question}\n" + "".join(f"{letter}. {opt}\n" for letter, opt in zip(LETTERS, options)) + MCQ_INSTRUCTION


def _choice(q: _Question, rng: random.Random) -> dict:
    """q as 4 options: in-scene distractors first (so a choice needs the object, not just the scene), answer
    letter uniform."""
    near = rng.sample(q.near, len(q.near))
    far = [v for v in rng.sample(q.far, len(q.far)) if v not in near]
    options = (near + far)[:len(LETTERS) - 1]
    slot = rng.randrange(len(LETTERS))
    options.insert(slot, q.answer)
    return {"question": q.text, "options": options, "answer": LETTERS[slot], "kind": q.kind, "family": q.family,
            "target": q.target}


def mcq(scene: Scene, rng: random.Random, exclude=()) -> dict:
    """One 4-option question; family chosen evenly among those the scene offers.

    `exclude`: question texts not to ask again.
    """
    eligible = [q for q in _questions(scene) if q.multiple_choice and q.text not in exclude]
    if not eligible:
        raise ValueError(f"scene {scene.id}: no multiple-choice question left to ask")
    family = rng.choice(sorted({q.family for q in eligible}))
    return _choice(rng.choice([q for q in eligible if q.family == family]), rng)


def held_out_questions(scene: Scene, rng: random.Random, per_family: int) -> list[dict]:
    """The held-out questions of one clip: up to per_family distinct-text questions of every tested family."""
    out: list[dict] = []
    for family in TEST_FAMILIES:
        by_text = {q.text: q for q in _questions(scene) if q.family == family and q.multiple_choice}
        texts = rng.sample(sorted(by_text), min(per_family, len(by_text)))
        out += [_choice(by_text[text], rng) for text in texts]
    return out


def mcq_turns(scene: Scene, rng: random.Random, k: int) -> list[dict]:
    """Up to k multiple-choice questions with distinct texts (fewer if the scene has fewer)."""
    available = len({q.text for q in _questions(scene) if q.multiple_choice})
    out: list[dict] = []
    for _ in range(min(k, available)):
        out.append(mcq(scene, rng, exclude={q["question"] for q in out}))
    return out
