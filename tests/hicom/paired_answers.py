"""Per-question answers for gate and registry tests: a run, and a second run that differs on chosen questions."""
from __future__ import annotations

import random


def answers(n: int, seed: int = 1) -> list[bool]:
    """n answers, each right with probability 1/2."""
    rng = random.Random(seed)
    return [rng.random() < 0.5 for _ in range(n)]


def flipped(correct: list[bool], worse: int, better: int, seed: int = 0) -> list[bool]:
    """The same answers with `worse` right ones made wrong and `better` wrong ones made right, at random places."""
    rng = random.Random(seed)
    out = list(correct)
    for i in rng.sample([i for i, c in enumerate(correct) if c], worse):
        out[i] = False
    for i in rng.sample([i for i, c in enumerate(correct) if not c], better):
        out[i] = True
    return out
