"""HICom as a transformers model: SigLIP towers -> compressor -> Qwen2, in one PreTrainedModel.

`save_pretrained` / `from_pretrained` work as for any transformers model (safetensors). Visual
items reach the LLM by splicing their tokens into the input embeddings where the prompt holds a
placeholder id (IMAGE_TOKEN_ID / VIDEO_TOKEN_ID); the vocabulary is never changed.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as nnf
from torch import nn
from transformers import (
    PreTrainedModel,
    Qwen2ForCausalLM,
    SiglipTextModel,
    SiglipVisionModel,
)
from transformers import initialization as hf_init
from transformers.modeling_outputs import CausalLMOutputWithPast

from hicom.core.sequences import SequenceTooLongError, find_cut
from hicom.core.types import (
    IGNORE_INDEX,
    PLACEHOLDER_IDS,
    VisualItem,
)
from hicom.model.compressor import GlobalCompressor, build_projector
from hicom.model.configuration_hicom import HIComConfig
from hicom.model.injection import Guide


class HIComPreTrainedModel(PreTrainedModel):
    config_class = HIComConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "Qwen2DecoderLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, GlobalCompressor):
            module.reset_query(init=hf_init)


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, shortest: int) -> int:
    """How many leading text tokens every row of a batch has in common (0 for one row): before any placeholder,
    none of them padding, and fewer than the shortest spliced row, so every row keeps a token of its own.
    Splicing keeps a row's tokens before its first placeholder where they were, so these are the spliced
    sequences' common prefix too."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0) & (input_ids[0] >= 0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    return min(int(same.long().cumprod(dim=0).sum()), shortest - 1)


class HIComForCausalLM(HIComPreTrainedModel):
    """Vision tower + instruction tower + compressor + Qwen2 causal LM."""

    def __init__(self, config: HIComConfig):
        super().__init__(config)
        cc = config.compressor_config
        vision_dim = config.vision_config.hidden_size
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.text_tower = None
        text_dim = vision_dim
        if cc.uses_instruction:
            if config.text_tower_config is None:
                raise ValueError("config.text_tower_config: required when the compressor injects an instruction")
            self.text_tower = SiglipTextModel(config.text_tower_config)
            text_dim = config.text_tower_config.projection_size or config.text_tower_config.hidden_size
        self.projector = build_projector(cc, vision_dim, text_dim, config.llm_config.hidden_size)
        self.language_model = Qwen2ForCausalLM(config.llm_config)
        self.post_init()

    # -- components -------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_trainable(self, *, projector: bool, language_model: bool, towers: bool = False) -> None:
        """Freeze or unfreeze whole components (the paper keeps both towers frozen)."""
        self.projector.requires_grad_(projector)
        self.language_model.requires_grad_(language_model)
        self.vision_tower.requires_grad_(towers)
        if self.text_tower is not None:
            self.text_tower.requires_grad_(towers)

    def set_guidance(self, enabled: bool) -> None:
        """Instruction guidance on or off (off in alignment, on afterwards); parameters are unchanged."""
        self.projector.guided = enabled

    def num_visual_tokens(self, num_frames: int, modality: str = "video") -> int:
        g = self.config.vision_config.image_size // self.config.vision_config.patch_size
        return self.projector.num_tokens(num_frames, g, g, is_image=modality == "image")

    # -- encoding ---------------------------------------------------------------------------
    def encode_frames(self, pixel_values: torch.Tensor, with_embeds: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frames (N, 3, S, S) -> penultimate features F (N, g, g, C) and joint-space embeddings E.

        The tower's layers run one by one, as SigLIP's encoder runs them, so each caller pays for what it uses:
        without E (the LLaVA-OV projector) the last layer never runs, as LLaVA-OneVision drops it from its
        SigLIP; with E, the last layer, the post-layernorm and the per-token part of SigLIP's pooling head
        (layernorm + MLP, residual), but not the head's attention pooling, whose one pooled vector nothing uses.
        """
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values: expected (frames, 3, height, width), got shape {tuple(pixel_values.shape)}")
        if pixel_values.shape[0] == 0:
            raise ValueError("pixel_values: zero frames")
        vision = self.vision_tower
        trainable = any(p.requires_grad for p in vision.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            dtype = vision.embeddings.patch_embedding.weight.dtype
            hidden = vision.embeddings(pixel_values.to(dtype))
            *first_layers, last_layer = vision.encoder.layers
            for layer in first_layers:
                hidden = layer(hidden, None)
            embeds = None
            if with_embeds:
                last = vision.post_layernorm(last_layer(hidden, None))
                head = vision.head
                embeds = last + head.mlp(head.layernorm(last))
        n, tokens, c = hidden.shape
        g = int(round(tokens ** 0.5))
        return hidden.reshape(n, g, g, c), (None if embeds is None else embeds.reshape(n, g, g, c))

    def encode_guides(self, guide_input_ids: torch.Tensor) -> Guide:
        """SigLIP text tower on (k, L) ids: k stacked guides, pooled joint-space embeddings (+ per-token
        states for `fine`); `guides[i]` is the i-th alone."""
        if self.text_tower is None:
            raise ValueError("this model's compressor uses no instruction; it has no text tower")
        trainable = any(p.requires_grad for p in self.text_tower.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            out = self.text_tower(input_ids=guide_input_ids)
            tokens = None
            if self.projector.needs_guide_tokens:
                tokens = self.text_tower.head(out.last_hidden_state)
        return Guide(pooled=out.pooler_output, tokens=tokens, mask=self.guide_mask(guide_input_ids))

    def guide_mask(self, guide_input_ids: torch.Tensor) -> torch.Tensor:
        """True on the instruction's real tokens, False on padding."""
        pad_id = self.config.text_tower_config.pad_token_id
        return guide_input_ids != pad_id if pad_id is not None else torch.ones_like(guide_input_ids, dtype=torch.bool)

    def encode_visual(self, items: list[VisualItem]) -> list[torch.Tensor]:
        """Visual tokens for every (item, guide) pair, in placeholder order.

        All frames of all items go through the vision tower in one call. An item with k guides
        (k questions about one video) is encoded once and compressed for its k guides in one call.
        Items that can share a projector call (features of one shape, one modality, the same k guides
        of the same shapes) are compressed together in one (`visual_groups`): a micro-batch of short
        clips otherwise spends most of its compressor time in per-call overhead.
        """
        if not items:
            return []
        for i, item in enumerate(items):
            if item.modality not in PLACEHOLDER_IDS:
                raise ValueError(f"visual item {i}: unknown modality {item.modality!r} (expected image or video)")
            if item.features is None and (item.pixel_values is None or item.pixel_values.dim() != 4
                                          or item.pixel_values.shape[0] == 0):
                shape = None if item.pixel_values is None else tuple(item.pixel_values.shape)
                raise ValueError(f"visual item {i}: pixel_values must be (frames >= 1, 3, H, W), got shape {shape}")
        per_item = self.tower_outputs(items)
        guide_ids = [None if it.guide_input_ids is None else it.guide_input_ids.reshape(
            -1, it.guide_input_ids.shape[-1]) for it in items]
        counts = [1 if ids is None else ids.shape[0] for ids in guide_ids]
        guided = self.projector.uses_instruction
        guides = self._item_guides(items, guide_ids) if guided else [None] * len(items)
        inputs = []
        for i, (feats, emb) in enumerate(per_item):
            if not self.projector.needs_embeds:
                emb = None
            elif emb is None:
                raise ValueError(f"visual item {i}: the compressor needs joint-space embeddings (E) "
                                 "but the item's features came without them; encode them with embeddings")
            inputs.append((feats, emb))
        per_item_tokens: list[list[torch.Tensor]] = [[] for _ in items]
        for group in visual_groups(items, inputs, guides):
            feats = torch.stack([inputs[i][0] for i in group])
            emb = None if inputs[group[0]][1] is None else torch.stack([inputs[i][1] for i in group])
            guide = None if not guided else Guide.stack([guides[i] for i in group])
            out = self.projector(feats, emb, guide, is_image=items[group[0]].modality == "image")
            for i, tokens in zip(group, out.unbind(0)):
                # no instruction: one compression (N, D) serves every question; else one per guide (k, N, D)
                per_item_tokens[i] = [tokens] * counts[i] if not guided else list(tokens.unbind(0))
        return [tokens for item_tokens in per_item_tokens for tokens in item_tokens]

    def encode_item_guides(self, guide_ids: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(pooled (k, d), per-token states (k, L, d) or None) per item's (k, L) or (L,) instruction ids, from
        one text-tower call for all of them."""
        flat = [ids.reshape(-1, ids.shape[-1]) for ids in guide_ids]
        fresh = self.encode_guides(torch.cat(flat))
        out, start = [], 0
        for ids in flat:
            count = ids.shape[0]
            out.append((fresh.pooled[start:start + count],
                        None if fresh.tokens is None else fresh.tokens[start:start + count]))
            start += count
        return out

    def encode_items(self, items: list[VisualItem],
                     with_embeds: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(F, E or None) per item from its pixel_values, all frames in one vision-tower call."""
        features, embeds = self.encode_frames(torch.cat([it.pixel_values for it in items]), with_embeds)
        out, start = [], 0
        for it in items:
            t = it.pixel_values.shape[0]
            out.append((features[start:start + t], None if embeds is None else embeds[start:start + t]))
            start += t
        return out

    def _item_guides(self, items: list[VisualItem], guide_ids: list[torch.Tensor | None]) -> list[Guide]:
        """Each item's k stacked guides: from the item where encoded earlier, else one text-tower call for
        all the others."""
        missing = [i for i, ids in enumerate(guide_ids) if ids is None]
        if missing:
            raise ValueError(f"visual items {missing}: the compressor injects an instruction but no guide_input_ids")
        needs_tokens = self.projector.needs_guide_tokens
        states = [(it.guide_pooled, it.guide_tokens) for it in items]
        todo = [i for i, (pooled, tokens) in enumerate(states) if pooled is None or (needs_tokens and tokens is None)]
        if todo:
            for i, state in zip(todo, self.encode_item_guides([guide_ids[i] for i in todo])):
                states[i] = state
        return [Guide(pooled=pooled, tokens=tokens if needs_tokens else None, mask=self.guide_mask(ids))
                for (pooled, tokens), ids in zip(states, guide_ids)]

    def tower_outputs(self, items: list[VisualItem]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(F, E) per item: from the item where encoded earlier, else one tower call for all the others."""
        todo = [i for i, it in enumerate(items) if it.features is None]
        out: list = [(it.features, it.embeds) for it in items]
        if todo:
            for i, outputs in zip(todo, self.encode_items([items[i] for i in todo], self.projector.needs_embeds)):
                out[i] = outputs
        return out

    # -- splicing ---------------------------------------------------------------------------
    def splice(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None,
               visual_tokens: list[torch.Tensor], max_length: int | None = None, padding_side: str = "right"):
        """Replace each placeholder id by its item's visual tokens; cut to max_length; pad.

        Returns inputs_embeds (B, L, D), attention_mask (B, L), labels (B, L) or None, position_ids (B, L).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected (batch, length), got shape {tuple(input_ids.shape)}")
        max_length = max_length or self.config.max_length
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        placeholder = input_ids < 0
        n_placeholders = int(placeholder.sum())
        if n_placeholders != len(visual_tokens):
            raise ValueError(f"the batch has {n_placeholders} <image>/<video> placeholders but "
                             f"{len(visual_tokens)} visual items")
        batch, width = input_ids.shape
        device = input_ids.device
        text_embeds = self.get_input_embeddings()(input_ids.clamp(min=0))
        dtype, dim = text_embeds.dtype, text_embeds.shape[-1]
        # Every output row is gathered, in one indexing op, from one source: the text embeddings (row-major), then
        # every visual token, then a zero row for padding. A row-by-row assembly (slices, cat, slice assignment)
        # cost about 150 small ops a micro-batch forward and as many backward; a gather copies the same values,
        # so the output and the gradients that reach the text embeddings and visual tokens are the same bits.
        sizes = [tokens.shape[0] for tokens in visual_tokens]
        source = torch.cat([text_embeds.reshape(batch * width, dim), *(t.to(dtype) for t in visual_tokens),
                            text_embeds.new_zeros(1, dim)])
        pad_index = source.shape[0] - 1
        text_labels = labels.reshape(-1) if labels is not None else torch.full((batch * width,), IGNORE_INDEX,
                                                                              dtype=torch.long, device=device)
        source_labels = torch.cat([text_labels, text_labels.new_full((sum(sizes) + 1,), IGNORE_INDEX)])
        starts = [batch * width + offset for offset in itertools.accumulate([0, *sizes[:-1]])] if sizes else []
        keep_rows, placeholder_rows = attention_mask.bool().tolist(), placeholder.tolist()
        rows, item = [], 0
        for b in range(batch):
            index, visual_end = [], 0
            for pos in range(width):
                if not keep_rows[b][pos]:
                    continue
                if placeholder_rows[b][pos]:
                    index.extend(range(starts[item], starts[item] + sizes[item]))
                    item += 1
                    visual_end = len(index)
                else:
                    index.append(b * width + pos)
            if labels is None and len(index) > max_length:
                raise SequenceTooLongError(f"sample {b}: prompt of {len(index)} tokens after splicing exceeds "
                                           f"max_length={max_length}")
            try:
                cut = find_cut(source_labels[torch.tensor(index, dtype=torch.long, device=device)], visual_end,
                               max_length) if len(index) > max_length else len(index)
            except SequenceTooLongError as exc:
                raise SequenceTooLongError(f"sample {b}: {exc}") from None
            rows.append(index[:cut])
        length = max(len(index) for index in rows)
        gather = torch.full((batch, length), pad_index, dtype=torch.long)
        out_mask = torch.zeros(batch, length, dtype=torch.long)
        position_ids = torch.zeros(batch, length, dtype=torch.long)
        for b, index in enumerate(rows):
            n = len(index)
            span = slice(0, n) if padding_side == "right" else slice(length - n, length)
            gather[b, span] = torch.tensor(index, dtype=torch.long)
            out_mask[b, span] = 1
            position_ids[b, span] = torch.arange(n)
        gather, out_mask, position_ids = gather.to(device), out_mask.to(device), position_ids.to(device)
        out_embeds = source[gather]
        out_labels = source_labels[gather] if labels is not None else None
        return out_embeds, out_mask, out_labels, position_ids

    # -- forward / generate -----------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, visual_items: list[VisualItem] | None = None,
                **kwargs) -> CausalLMOutputWithPast:
        """Without labels: the language model's output (logits at every position).

        With labels: the mean next-token cross-entropy over the supervised tokens, computed from
        the hidden states at those positions only; `logits` then holds just their rows
        (supervised tokens, vocab), in (row, position) order. The full (batch, length, vocab)
        logits - a step's largest activation at a 152k vocabulary, and most of the LM head's
        work when answers are a few tokens of a long visual prompt - are never built.
        """
        visual = self.encode_visual(visual_items or [])
        embeds, mask, labels, position_ids = self.splice(input_ids, attention_mask, labels, visual)
        if labels is None:
            return self.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, **kwargs)
        shared = shared_prefix_length(input_ids, attention_mask, int(mask.sum(1).min()))
        if shared and not kwargs and not self.language_model.is_activation_checkpointing:
            hidden, out = self._decode_after_shared_prefix(embeds, mask, position_ids, shared), None
        else:
            kwargs.setdefault("use_cache", False)  # a loss needs no key/value cache
            out = self.language_model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                                            **kwargs)
            hidden = out.last_hidden_state
        targets = labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        logits = self.language_model.lm_head(hidden[:, :-1][supervised])
        loss = nnf.cross_entropy(logits.float(), targets[supervised])
        if out is None:
            return CausalLMOutputWithPast(loss=loss, logits=logits)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states, attentions=out.attentions)

    def _decode_after_shared_prefix(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
                                    shared: int) -> torch.Tensor:
        """The decoder's last hidden states (B, L, D) of a batch whose rows start with the same `shared` tokens.

        Why: in a causal decoder those tokens' keys, values and hidden states are the same in every row, and the
        chat scaffold before the visual tokens (the system prompt and the user's header: 27 of an instruction-tuning
        question's 81 tokens on the tiny profile) is such a prefix. It is decoded once, as one row, and its
        key/value cache repeated for the batch; the rest of each row attends to it. The same values up to
        rounding, and the gradients of the B rows meet in the one prefix (the repeat's backward sums them).
        """
        model = self.language_model.model
        head = model(inputs_embeds=embeds[:1, :shared], position_ids=position_ids[:1, :shared], use_cache=True)
        cache = head.past_key_values
        cache.batch_repeat_interleave(embeds.shape[0])
        tail = model(inputs_embeds=embeds[:, shared:], attention_mask=mask, position_ids=position_ids[:, shared:],
                     past_key_values=cache, use_cache=True)
        return torch.cat([head.last_hidden_state.expand(embeds.shape[0], -1, -1), tail.last_hidden_state], dim=1)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 visual_items: list[VisualItem] | None = None, max_new_tokens: int = 64,
                 **kwargs) -> torch.Tensor:
        """Greedy decoding; returns only the new token ids (B, <= max_new_tokens)."""
        visual = self.encode_visual(visual_items or [])
        embeds, mask, _, _ = self.splice(input_ids, attention_mask, None, visual, padding_side="left")
        gen = self.language_model.generation_config
        kwargs.setdefault("pad_token_id", gen.pad_token_id if gen.pad_token_id is not None else gen.eos_token_id)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                            max_new_tokens=max_new_tokens, **kwargs)


def _shape(t: torch.Tensor | None):
    return None if t is None else (tuple(t.shape), t.dtype, t.device)


def visual_groups(items: list[VisualItem], inputs: list[tuple[torch.Tensor, torch.Tensor | None]],
                  guides: list[Guide | None]) -> list[list[int]]:
    """Indices of the items one projector call can compress together, in first-appearance order: the same
    features (and embeddings) shape, dtype and device, the same modality, and guides of the same shapes (the
    same k), or none. Items whose inputs came from the cache or the towers are alike here."""
    groups: dict[tuple, list[int]] = {}
    for i, (item, (feats, emb), guide) in enumerate(zip(items, inputs, guides)):
        key = (item.modality, _shape(feats), _shape(emb),
               None if guide is None else tuple(_shape(t) for t in (guide.pooled, guide.tokens, guide.mask)))
        groups.setdefault(key, []).append(i)
    return list(groups.values())
