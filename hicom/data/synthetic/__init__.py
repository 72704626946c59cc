"""A procedurally generated video world: the default data for every stage when nothing can be downloaded.

Each clip shows a few uniquely nameable shapes (distinct shape and colour) that move in one direction,
and some appear late or leave early. Most questions are about ONE object or ONE moment, so a compressor
that is told the question can keep the tokens that matter and beat one that compresses blindly; an
"existence" kind (which colour can be seen) asks about the whole clip, the easiest grounded question.
Everything is a pure function of the seed: each scene draws from its own string-seeded RNG streams,
so the output does not depend on the order in which scenes are produced.

Modules, by job: `config` (WorldConfig), `scenes` (the scene model and its sampling), `render`
(frames, mp4, PNG), `language` (captions, questions, multiple choice), `world` (the files on disk).
"""
from hicom.data.synthetic.config import WorldConfig
from hicom.data.synthetic.language import (
    CELLS,
    FAMILIES,
    IMAGE_PROMPTS,
    LETTERS,
    MCQ_INSTRUCTION,
    TEST_FAMILIES,
    VIDEO_PROMPTS,
    Family,
    caption,
    cell,
    held_out_questions,
    in_clip_options,
    instruction_pairs,
    mcq,
    mcq_prompt,
    mcq_turns,
    qa_turns,
    unnamed_questions,
)
from hicom.data.synthetic.render import object_mask, render_frame, write_image, write_video
from hicom.data.synthetic.scenes import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    make_scene,
    object_radius,
)
from hicom.data.synthetic.world import (
    TEST_FILE,
    TRAIN_FILES,
    generate_world,
    read_world,
)

__all__ = [
    "WorldConfig", "FAMILIES", "TEST_FAMILIES", "Family", "held_out_questions",
    "CELLS", "IMAGE_PROMPTS", "LETTERS", "MCQ_INSTRUCTION", "VIDEO_PROMPTS", "caption", "cell",
    "in_clip_options", "instruction_pairs", "mcq", "mcq_prompt", "mcq_turns", "qa_turns", "unnamed_questions",
    "object_mask",
    "render_frame", "write_image", "write_video",
    "BACKGROUNDS", "COLOURS", "MOTIONS", "SHAPES", "SIZES", "Scene", "SceneObject", "make_scene", "object_radius",
    "TEST_FILE", "TRAIN_FILES", "generate_world", "read_world",
]
