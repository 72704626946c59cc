"""The numbers side by side: baseline / HICom ratios and the markdown table in the shape of Table A6."""
from __future__ import annotations

from hicom.efficiency.fields import (
    MEMORY_KINDS,
    MODELS,
    RATIO_FIELDS,
    RATIO_TABLE_FIELDS,
)


def ratios(rows: list[dict]) -> list[dict]:
    """baseline / HICom of every RATIO_FIELDS value, per frame count (None where HICom's value is 0)."""
    by_key = {(r["model"], r["frames"]): r for r in rows}
    out = []
    for frames in sorted({r["frames"] for r in rows}):
        hicom, base = by_key[("hicom", frames)], by_key[("llava_ov", frames)]
        out.append({"frames": frames, **{k: (base[k] / hicom[k] if hicom[k] else None) for k in RATIO_FIELDS}})
    return out


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def format_table(result: dict) -> str:
    """Markdown in the shape of Table A6: components, times, throughput, tokens, FLOPs, memory; then ratios."""
    rows, env = result["rows"], result["environment"]
    memory_kind = rows[0]["peak_memory_kind"]
    lines = [
        f"# Efficiency profile: profile `{result['profile']}`",
        "",
        f"Model: {result['model_source']}. Device: {env['device']} ({env['device_name']}), dtype {env['dtype']}, "
        f"torch threads: {env['torch_threads']}. Decoder: {env['decoder']['decoder']} {env['decoder']['version']}. "
        f"Clips: {result['clips_source']}. Prompt: {result['prompt']['source']}.",
        f"Medians of {result['settings']['repeats']} repeats after {result['settings']['warmup']} warm-up; "
        f"s/video: mean over {result['settings']['samples']} questions (video loading, preprocessing, vision, "
        f"compressor, prefill and {result['settings']['max_new_tokens']} generated tokens). "
        f"Peak memory: {MEMORY_KINDS[memory_kind]}. Prefill FLOPs: FlopCounterMode; attention (in brackets) is "
        f"counted dense and grows with the square of the prefill length, the rest linearly.",
        "",
        "| model | frames | vision params | text params | compressor params | LLM params | vision ms "
        "| compressor ms (incl. text) | LLM TTFT ms | s/video | visual tokens | prefill GFLOPs (attention) "
        "| peak mem MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = r["params"]
        lines.append(
            f"| {MODELS[r['model']]} | {r['frames']} | {_m(p['vision'])} | {_m(p['text'])} | {_m(p['projector'])} "
            f"| {_m(p['llm'])} | {r['vision_ms']:.1f} | {r['compressor_ms']:.1f} | {r['llm_ttft_ms']:.1f} "
            f"| {r['s_per_video']:.3f} | {r['visual_tokens']} | {r['llm_prefill_flops'] / 1e9:.2f} "
            f"({r['llm_prefill_attention_flops'] / 1e9:.2f}) "
            f"| {r['peak_memory_mb']:.1f} |")
    lines += [
        "",
        "Baseline / HICom:",
        "",
        "| frames | visual tokens | LLM prefill tokens | prefill FLOPs | LLM TTFT | vision | compressor "
        "| s/video | peak mem |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q in result["ratios"]:
        cells = ["n/a" if q[k] is None else f"{q[k]:.2f}x" for k in RATIO_TABLE_FIELDS]
        lines.append(f"| {q['frames']} | " + " | ".join(cells) + " |")
    lines += ["", f"Accuracy vs tokens: {result['accuracy_plot']}"]
    return "\n".join(lines) + "\n"
