"""The registered model's inference: an MLflow pyfunc that answers a question about a video.

`mlflow.pyfunc.load_model("models:/NAME@champion")` rebuilds it from its own artifacts (the saved
HICom model with its LLM tokenizer, and the instruction tokenizer + frame preprocessor of the
towers) and the hicom code logged with it, so a consumer needs no project checkout, only the
pinned packages. The prompt, guide and answer parsing are the ones evaluation uses, so a served
answer is the evaluated answer. This file is logged as the model's code (MLflow "models from
code": no pickled object), hence the `set_model` at the bottom.
"""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

MODEL_ARTIFACT = "model"  # HIComForCausalLM.save_pretrained directory + the LLM tokenizer
TOWERS_ARTIFACT = "towers"  # instruction (guide) tokenizer + preprocessor_config.json

SIGNATURE = ModelSignature(
    inputs=Schema([
        ColSpec(DataType.string, "video"),  # a path readable where the model runs
        ColSpec(DataType.string, "question"),
        ColSpec(Array(DataType.string), "options", required=False),  # multiple choice: option texts, A first
    ]),
    outputs=Schema([
        ColSpec(DataType.string, "reply"),  # the generated text (likelihood: the chosen option as a short answer)
        ColSpec(DataType.string, "choice", required=False),  # the option letter it chose; None: none or several
        ColSpec(DataType.string, "answer"),  # the chosen option's text (the reply when none was chosen)
    ]),
)


class VideoQAModel(mlflow.pyfunc.PythonModel):
    """Greedy video question answering with a trained HICom model.

    model_config: num_frames, decoder (decord | pyav), guide_max_length, max_new_tokens, template (a
    hicom.evaluate.benchmarks.BENCHMARKS name: its prompt template lays out the options), protocol (how a
    multiple-choice answer is read, as in the evaluation the model was promoted on: `generate`, a greedy reply
    with its letter extracted, or `likelihood`, the option likeliest as the short answer; models registered
    before it was recorded generate).
    """

    def load_context(self, context) -> None:
        from hicom.data.tokenizer import load_tokenizer
        from hicom.data.video import FramePreprocessor
        from hicom.model.modeling_hicom import HIComForCausalLM

        settings = context.model_config
        self.num_frames = int(settings["num_frames"])
        self.decoder = settings["decoder"]
        self.guide_max_length = int(settings["guide_max_length"])
        self.max_new_tokens = int(settings["max_new_tokens"])
        self.template = settings["template"]
        self.protocol = settings.get("protocol", "generate")
        model_dir = Path(context.artifacts[MODEL_ARTIFACT])
        towers_dir = Path(context.artifacts[TOWERS_ARTIFACT])
        self.model = HIComForCausalLM.from_pretrained(model_dir).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.guide_tokenizer = load_tokenizer(towers_dir) if self.model.projector.uses_instruction else None
        self.preprocessor = FramePreprocessor.from_pretrained(towers_dir)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = model_input.to_dict("records")
        return pd.DataFrame([self._answer(row) for row in rows], columns=["reply", "choice", "answer"])

    @torch.no_grad()
    def _answer(self, row: dict) -> dict:
        """As evaluation asks (hicom.evaluate.mcq): the template's prompt, the bare question as the guide."""
        from hicom.core.types import VisualItem
        from hicom.data.conversation import encode_prompt, tokenise_guides
        from hicom.data.video import read_video
        from hicom.evaluate.answers import extract_choice
        from hicom.evaluate.benchmarks import BENCHMARKS
        from hicom.evaluate.prompts import guide_text
        from hicom.evaluate.readers import Sample

        options = _options(row.get("options"))
        sample = Sample(id="served", video=Path(row["video"]), question=row["question"], options=options, answer=None)
        prompt = BENCHMARKS[self.template].template.render(sample) if options else sample.question
        clip = read_video(sample.video, self.num_frames, decoder=self.decoder, scale_for=self.preprocessor)
        pixels = self.preprocessor(clip.frames)
        guide = None
        if self.guide_tokenizer is not None:
            guide = tokenise_guides(self.guide_tokenizer, [guide_text(sample)], self.guide_max_length)[0]
        if options and self.protocol == "likelihood":
            from hicom.evaluate.mcq import likeliest_letter, option_scores, short_answer

            features, embeds = self.model.encode_frames(pixels, with_embeds=self.model.projector.needs_embeds)
            [scores] = option_scores(self.model, [sample], [prompt], self.tokenizer, self.guide_tokenizer, features,
                                     embeds, pixels.device)
            choice = likeliest_letter(scores)
            answer = options[ord(choice) - ord("A")]
            return {"reply": short_answer(answer), "choice": choice, "answer": answer}
        ids = encode_prompt(self.tokenizer, prompt, "video").unsqueeze(0)
        out = self.model.generate(ids, visual_items=[VisualItem(pixels, "video", guide)],
                                  max_new_tokens=self.max_new_tokens, eos_token_id=self.tokenizer.eos_token_id)
        reply = self.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        choice = extract_choice(reply, options) if options else None
        answer = options[ord(choice) - ord("A")] if choice else reply
        return {"reply": reply, "choice": choice, "answer": answer}


def _options(value) -> list[str]:
    """Options as a list of strings; a missing column arrives as None or NaN, an array column as ndarray."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    return [str(option) for option in value]


mlflow.models.set_model(VideoQAModel())
