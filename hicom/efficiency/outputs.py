"""Where a measurement goes: profile.json, table.md and plots in a folder, and params/metrics/files in MLflow."""
from __future__ import annotations

from pathlib import Path

from hicom.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from hicom.efficiency.fields import RATIO_FIELDS
from hicom.efficiency.tables import format_table
from hicom.plots import accuracy_vs_tokens_png, latency_breakdown_png


def write_outputs(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """profile.json, table.md, latency_breakdown.png and, with eval results, accuracy_vs_tokens.png (atomic)."""
    out = Path(out_dir)
    files = {"profile.json": out / "profile.json", "table.md": out / "table.md",
             "latency_breakdown.png": out / "latency_breakdown.png"}
    atomic_write_json(files["profile.json"], result)
    atomic_write_text(files["table.md"], format_table(result))
    atomic_write_bytes(files["latency_breakdown.png"], latency_breakdown_png(result["rows"]))
    if result["accuracy_vs_tokens"]:
        files["accuracy_vs_tokens.png"] = out / "accuracy_vs_tokens.png"
        atomic_write_bytes(files["accuracy_vs_tokens.png"], accuracy_vs_tokens_png(result["accuracy_vs_tokens"]))
    return files


def log_to_tracker(tracker, result: dict, files: dict[str, Path]) -> None:
    """Params (settings, environment), one metric per row field and ratio, and the output files."""
    env = result["environment"]
    tracker.log_params({"profile": result["profile"], "model_source": result["model_source"],
                        "efficiency": {k: v for k, v in result["settings"].items() if k != "clips"},
                        "efficiency.clips_source": result["clips_source"], "prompt_source": result["prompt"]["source"],
                        "device": env["device"], "dtype": env["dtype"], "torch_threads": env["torch_threads"],
                        "decoder": env["decoder"]["decoder"], "decoder_version": env["decoder"]["version"],
                        "peak_memory_kind": result["rows"][0]["peak_memory_kind"]})
    metrics = {}
    for r in result["rows"]:
        prefix = f"{r['model']}.f{r['frames']}"
        for key in ("visual_tokens", "llm_prefill_tokens", "vision_ms", "compressor_ms", "llm_ttft_ms", "load_ms",
                    "e2e_ms", "e2e_cpu_ms", "s_per_video", "llm_prefill_flops", "llm_prefill_attention_flops",
                    "peak_memory_mb"):
            metrics[f"{prefix}.{key}"] = r[key]
        for part, n in r["params"].items():
            metrics[f"{prefix}.params.{part}"] = n
        for part, ms in r["question_parts_ms"].items():
            metrics[f"{prefix}.question_ms.{part}"] = ms
    for q in result["ratios"]:
        for key in RATIO_FIELDS:
            if q[key] is not None:
                metrics[f"ratio.f{q['frames']}.{key}"] = q[key]
    tracker.log_metrics(metrics)
    for path in files.values():
        tracker.log_artifact(path, "efficiency")
