"""Multiple-choice video QA with greedy decoding, scored against the answer letter.

Unparseable replies count as unanswered (wrong), never as a default letter; a sample whose video
cannot be read is reported as missing, not fatal.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from hicom.data.conversation import encode_prompt, extract_guide, tokenise_guides
from hicom.data.video import FramePreprocessor, VideoReadError, read_video
from hicom.evaluate.answers import extract_choice
from hicom.model.modeling_hicom import VisualItem


def read_mcq(path: str | Path) -> list[dict]:
    """Rows of a synthetic MCQ file, with the video path made absolute."""
    path = Path(path)
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            row["video"] = str(path.parent / row["video"])
            rows.append(row)
    return rows


@torch.no_grad()
def evaluate_mcq(model, rows: list[dict], tokenizer, guide_tokenizer, preprocessor: FramePreprocessor,
                 num_frames: int, decoder: str = "decord", guide_max_length: int = 64,
                 max_new_tokens: int = 4) -> dict:
    model.eval()
    predictions, missing = [], []
    for row in rows:
        try:
            pixels = preprocessor(read_video(row["video"], num_frames, decoder=decoder).frames)
        except VideoReadError as exc:
            missing.append({"id": row["id"], "reason": str(exc)})
            continue
        guide = None
        if model.projector.uses_instruction:
            guide = tokenise_guides(guide_tokenizer, [extract_guide(row["prompt"])], guide_max_length)[0]
        ids = encode_prompt(tokenizer, row["prompt"], "video").unsqueeze(0)
        out = model.generate(ids, visual_items=[VisualItem(pixels, "video", guide)], max_new_tokens=max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id)
        reply = tokenizer.decode(out[0], skip_special_tokens=True)
        choice = extract_choice(reply, row["options"])
        predictions.append({"id": row["id"], "kind": row.get("kind"), "reply": reply, "choice": choice,
                            "answer": row["answer"], "correct": choice == row["answer"]})
    answered = [p for p in predictions if p["choice"] is not None]
    by_kind = {}
    for kind in sorted({p["kind"] for p in predictions if p["kind"]}):
        group = [p for p in predictions if p["kind"] == kind]
        by_kind[kind] = sum(p["correct"] for p in group) / len(group)
    total = len(predictions)
    return {
        "total": total,
        "accuracy": sum(p["correct"] for p in predictions) / total if total else 0.0,
        "answered": len(answered),
        "unanswered": total - len(answered),
        "chance": sum(1 / len(r["options"]) for r in rows) / len(rows) if rows else 0.0,
        "by_kind": by_kind,
        "choice_counts": dict(Counter(p["choice"] or "none" for p in predictions)),
        "missing": missing,
        "predictions": predictions,
    }
