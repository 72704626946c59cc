"""Every PNG the project draws: efficiency (latency breakdown, accuracy vs visual tokens) and training
(loss curves). Used by hicom.efficiency and by the pipeline report, so one figure looks the same wherever
it appears. Each function returns PNG bytes; matplotlib is imported only when a figure is drawn.
"""
from __future__ import annotations

import io


def _png(figure, dpi: int = 120) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def latency_breakdown_png(rows: list[dict]) -> bytes:
    """Stacked bars (vision / compressor / LLM TTFT, ms) per model, grouped by frame count."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.6 + 1.1 * len(rows), 4.2))
    ax = figure.add_subplot()
    labels = [f"{'HICom' if r['model'] == 'hicom' else 'LLaVA-OV'}\n{r['frames']} f" for r in rows]
    bottom = [0.0] * len(rows)
    for part, colour in (("vision_ms", "#4c72b0"), ("compressor_ms", "#dd8452"), ("llm_ttft_ms", "#55a868")):
        heights = [r[part] for r in rows]
        ax.bar(labels, heights, bottom=bottom, color=colour,
               label={"vision_ms": "vision encoder", "compressor_ms": "compressor (incl. text encoder)",
                      "llm_ttft_ms": "LLM time to first token"}[part])
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("median ms per question")
    ax.set_title("Latency breakdown: HICom vs LLaVA-OV baseline")
    ax.legend(fontsize=8)
    return _png(figure)


def accuracy_vs_tokens_png(points: list[dict]) -> bytes:
    """One labelled point per result (visual tokens per question, accuracy), with its 95% interval as an error bar
    where the point has one (ci_low, ci_high); a chance line when all agree on it."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4))
    ax = figure.add_subplot()
    ax.scatter([p["visual_tokens"] for p in points], [p["accuracy"] for p in points], color="#4c72b0")
    bars = [p for p in points
            if isinstance(p.get("ci_low"), (int, float)) and isinstance(p.get("ci_high"), (int, float))]
    if bars:
        ax.errorbar([p["visual_tokens"] for p in bars], [p["accuracy"] for p in bars],
                    yerr=[[p["accuracy"] - p["ci_low"] for p in bars], [p["ci_high"] - p["accuracy"] for p in bars]],
                    fmt="none", ecolor="#4c72b0", capsize=3, label="95% interval")
    for p in points:
        ax.annotate(p["label"], (p["visual_tokens"], p["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    chances = {p["chance"] for p in points if isinstance(p.get("chance"), (int, float))}
    if len(chances) == 1:
        ax.axhline(chances.pop(), color="grey", linestyle="--", linewidth=1, label="chance")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_xlabel("visual tokens per question")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs visual tokens")
    return _png(figure)


def loss_curves_png(losses: dict[str, list[tuple[int, float]]]) -> bytes:
    """One panel per training stage: loss against optimizer step."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(4 * len(losses), 3.4), layout="constrained")
    for i, (stage, history) in enumerate(losses.items()):
        ax = figure.add_subplot(1, len(losses), i + 1)
        ax.plot([step for step, _ in history], [loss for _, loss in history], marker=".", color="#4c72b0")
        ax.set_title(stage)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss" if i == 0 else "")
        ax.grid(alpha=0.3)
    figure.suptitle("Training loss per stage")
    return _png(figure, dpi=110)


def ablation_variants_png(rows: list[dict]) -> bytes:
    """One column per variant (the ablation sweep): each seed's accuracy as a dot, the mean over seeds as a bar with
    its 95% interval (ci_low, ci_high) as an error bar where it has one; a chance line when all agree on it.
    rows: {label, seeds: [accuracy, ...], mean, ci_low, ci_high, chance}."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.8 + 1.2 * len(rows), 4))
    ax = figure.add_subplot()
    xs = list(range(len(rows)))
    ax.bar(xs, [r["mean"] for r in rows], color="#c6d4e6", edgecolor="#4c72b0", label="mean over seeds")
    for x, r in zip(xs, rows):
        seeds = r.get("seeds") or []
        ax.scatter([x + (i - (len(seeds) - 1) / 2) * 0.12 for i in range(len(seeds))], seeds, color="#4c72b0",
                   s=14, zorder=3, label="one seed" if x == 0 else None)
        if isinstance(r.get("ci_low"), (int, float)) and isinstance(r.get("ci_high"), (int, float)):
            ax.errorbar([x], [r["mean"]], yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]], fmt="none",
                        ecolor="black", capsize=4, zorder=4, label="95% interval (pooled)" if x == 0 else None)
    chances = {r["chance"] for r in rows if isinstance(r.get("chance"), (int, float))}
    if len(chances) == 1:
        ax.axhline(chances.pop(), color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(xs, [r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_title("Ablations: accuracy per variant")
    ax.legend(fontsize=8)
    return _png(figure)
