"""The report's plots (given code): size against perplexity, speed-ups, sparsity curves, layer sensitivity.

Each takes a ``results_table`` (or ``given/experiments.py``'s sweeps), draws one figure with a
subtitle naming the model, devices and threads, and saves it when given a path. ``_plain_log_axis``,
``_save``, ``_subtitle`` and ``_finish_sparsity_plot`` are shared with ``given/experiments.py``'s own
plots.
"""
import math

def _subtitle(table, model=None):
    """``model`` or the table's ``model`` column, and the devices, for a plot's subtitle."""
    names = [model] if model else (sorted({str(m) for m in table["model"].dropna()}) if "model" in table.columns else [])
    devices = sorted({str(d) for d in table["device"].dropna()}) if "device" in table.columns else []
    parts = [f"model: {', '.join(names)}" if names else "", f"device: {', '.join(devices)}" if devices else ""]
    if "threads" in table.columns and table["threads"].notna().any():
        parts.append(f"{', '.join(sorted({str(int(t)) for t in table['threads'].dropna()}))} CPU thread(s)")
    return " | ".join(part for part in parts if part)


def _plain_log_axis(ax, values, *, min_ratio=4.0):
    """Log-scale y axis labelled in plain numbers (20, 50, 100, ...: no 3.1x10^4 ticks), spanning at
    least a factor ``min_ratio``, so that a 1% difference does not fill the whole height."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    ax.set_yscale("log")
    if finite:
        low, high = min(finite) / 1.15, max(finite) * 1.15
        if high / low < min_ratio:
            middle = math.sqrt(low * high)
            low, high = middle / math.sqrt(min_ratio), middle * math.sqrt(min_ratio)
        ax.set_ylim(low, high)
        subs = (1.0, 2.0, 5.0) if high / low > 30 else tuple(float(k) for k in range(1, 10))
    else:
        subs = (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 10 else f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _save(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _spread_markers(ax, points, *, spacing=20, baseline=None):
    """Offsets in points that keep numbered markers at least ``spacing`` points apart: a marker
    that would overlap one already placed moves out along a spiral (and gets a leader line).

    With ``baseline`` (x, y in data units), a moved marker stays on its true side of the
    baseline's vertical and horizontal lines, no nearer to them than its true point (or than
    half a marker): a marker never appears to beat the baseline when it does not. A marker that
    finds no such place stays on its true point."""
    to_points = 72.0 / ax.figure.dpi
    box = ax.get_window_extent()
    left, bottom, right, top = (v * to_points for v in (box.x0, box.y0, box.x1, box.y1))
    margin = spacing / 2
    lines = None if baseline is None else [c * to_points for c in ax.transData.transform(baseline)]

    def keeps_side(true, moved, line):
        return true == line or (moved - line) * math.copysign(1, true - line) >= min(margin, abs(true - line))

    placed, offsets = [], []
    for x, y in points:
        px, py = (coordinate * to_points for coordinate in ax.transData.transform((x, y)))
        for step in range(400):
            angle, radius = 2.4 * step, 0.0 if step == 0 else spacing * (0.8 + 0.25 * step ** 0.5)
            dx, dy = radius * math.cos(angle), radius * math.sin(angle)
            allowed = step == 0 or (left + margin <= px + dx <= right - margin and bottom + margin <= py + dy <= top - margin
                                    and (lines is None or (keeps_side(px, px + dx, lines[0])
                                                           and keeps_side(py, py + dy, lines[1]))))
            if allowed and all(math.hypot(px + dx - qx, py + dy - qy) >= spacing for qx, qy in placed):
                break
        else:
            dx, dy = 0.0, 0.0
        placed.append((px + dx, py + dy))
        offsets.append((dx, dy))
    return offsets


def plot_size_vs_perplexity(table, path=None, *, anchor=None, baseline="FP32", model=None):
    """Size (MB) against perplexity (log scale), one numbered marker per technique, keyed on the right.

    The baseline's size and perplexity are drawn as dashed lines: lower-left of their crossing is
    better on both. ``anchor`` (a published perplexity) adds a dotted line, when it applies to
    the model measured. Techniques with an infinite perplexity are listed, not drawn.
    """
    import matplotlib.pyplot as plt

    fig, (ax, key) = plt.subplots(1, 2, figsize=(12, 6.5), gridspec_kw={"width_ratios": [2.2, 1]})
    _plain_log_axis(ax, list(table["perplexity"]) + ([anchor] if anchor is not None else []))
    ax.set_xlim(left=0, right=1.08 * table["size_mb"].max())
    lines, points = [], []
    for number, (technique, row) in enumerate(table.iterrows(), start=1):
        finite = math.isfinite(row["perplexity"])
        lines.append(f"{number:>2}  {technique}: {row['size_mb']:.1f} MB, "
                     + (f"ppl {row['perplexity']:,.2f}" if finite else "ppl inf (not drawn)"))
        if finite:
            points.append((number, technique == baseline, row["size_mb"], row["perplexity"]))
    key.axis("off")
    fig.tight_layout()
    fig.canvas.draw()  # fixes the layout and the axes' transform, so markers can be placed apart in points
    base = table.loc[baseline] if baseline in table.index else None
    offsets = _spread_markers(ax, [(p[2], p[3]) for p in points],
                              baseline=None if base is None else (base["size_mb"], base["perplexity"]))
    for (number, is_base, x, y), (dx, dy) in zip(points, offsets):
        ax.scatter(x, y, s=10, color="black", zorder=3)  # the true position, under its number
        ax.annotate(str(number), (x, y), xytext=(dx, dy), textcoords="offset points", ha="center", va="center",
                    fontsize=7.5, color="white", fontweight="bold", zorder=4,
                    bbox=dict(boxstyle="circle,pad=0.3", fc="tab:orange" if is_base else "tab:blue",
                              ec="black", lw=0.5, alpha=0.9),
                    arrowprops=dict(arrowstyle="-", color="gray", lw=0.6) if (dx, dy) != (0, 0) else None)
    if base is not None:
        ax.axhline(base["perplexity"], linestyle="--", color="tab:orange", linewidth=1,
                   label=f"{baseline}: perplexity {base['perplexity']:,.2f}")
        ax.axvline(base["size_mb"], linestyle="--", color="tab:orange", linewidth=1, alpha=0.6,
                   label=f"{baseline}: {base['size_mb']:.1f} MB")
    if anchor is not None:
        ax.axhline(anchor, linestyle=":", color="gray", label=f"published bert-base-uncased ~{anchor:g}")
    ax.set(xlabel="size as stored (MB)", ylabel="masked-LM perplexity (log scale; lower is better)")
    ax.set_title("Size vs perplexity (lower-left is better)\n" + _subtitle(table, model), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    key.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7.5,
             transform=key.transAxes)
    return _save(fig, path)


def plot_latency(table, path=None, *, baseline="FP32", model=None):
    """Speed-up over FP32 per technique (median of interleaved rounds, quartiles as whiskers).

    The axis starts at 0 and the baseline (orange) is the line at 1.0. Grey hatched bars: the spread includes
    1.0, no measurable difference. Each bar is labelled with its median latency. Without
    ``x_faster`` (no baseline), the median latencies themselves are drawn.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.42 * len(table) + 2.2))
    labels = list(table.index)
    has_ratio = "x_faster" in table.columns
    values = table["x_faster"] if has_ratio else table["latency_ms"]
    if has_ratio and {"x_faster_q1", "x_faster_q3"} <= set(table.columns):
        low, high = table["x_faster_q1"], table["x_faster_q3"]
    else:
        low, high = (table["latency_q1_ms"], table["latency_q3_ms"]) if not has_ratio else (values, values)
    is_base = [technique == baseline for technique in labels]
    unclear = [has_ratio and not base and lo <= 1.0 <= hi for lo, hi, base in zip(low, high, is_base)]
    colors = ["tab:orange" if base else "lightgray" if flag else "tab:blue" for flag, base in zip(unclear, is_base)]
    bars = ax.barh(labels, values, xerr=[(values - low).clip(lower=0), (high - values).clip(lower=0)],
                   color=colors, edgecolor="black", linewidth=0.5, capsize=3)
    for bar, flag in zip(bars, unclear):
        if flag:
            bar.set_hatch("//")
    for y, (technique, row) in enumerate(table.iterrows()):
        if math.isfinite(row.get("latency_ms", math.nan)):
            ratio = f"{row['x_faster']:.2f}x, " if has_ratio and math.isfinite(row["x_faster"]) else ""
            ax.annotate(f" {ratio}{row['latency_ms']:,.0f} ms", (max(values.iloc[y], high.iloc[y]), y),
                        va="center", fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(left=0, right=1.25 * max(float(high.max()), 1.0))
    if has_ratio:
        ax.axvline(1.0, color="tab:orange", linestyle="--", label="FP32 (1.00x)")
        ax.legend(handles=[ax.lines[-1], plt.Rectangle((0, 0), 1, 1, facecolor="lightgray", hatch="//",
                                                      edgecolor="black", linewidth=0.5)],
                  labels=["FP32 (1.00x)", "spread includes 1.00x: no clear difference"],
                  loc="lower right", fontsize=8)
        ax.set_xlabel("speed-up over FP32 (x; > 1 is faster): median of interleaved rounds, whiskers: quartiles")
        title = "Speed-up per technique"
    else:
        ax.set_xlabel("median latency of one fixed batch (ms); whiskers: quartiles")
        title = "Latency per technique"
    batch = f"batch {table['batch_shape'].dropna().iloc[0]}" if "batch_shape" in table.columns and table["batch_shape"].notna().any() else ""
    ax.set_title(f"{title}\n" + " | ".join(p for p in (_subtitle(table, model), batch) if p), fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


PRUNING_STYLES = {"local": ("tab:blue", "o"), "global": ("tab:green", "s"), "structured": ("tab:red", "^")}


def plot_sparsity_curves(curves, path=None, *, reference=None, model=None):
    """Perplexity against the fraction of encoder Linear weights removed, one line per method.

    ``curves`` is ``given.experiments.sparsity_curve``'s table; ``reference`` (the unpruned
    perplexity) is drawn as a dashed line. Log scale in perplexity, labelled in plain numbers.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for method, points in curves.groupby("method", sort=False):
        color, marker = PRUNING_STYLES.get(method, (None, "o"))
        points = points.sort_values("removed")
        ax.plot(100 * points["removed"], points["perplexity"], marker=marker, color=color, label=method)
    if reference is not None:
        ax.axhline(reference, linestyle="--", color="tab:orange", linewidth=1, label=f"unpruned: {reference:,.2f}")
    _plain_log_axis(ax, list(curves["perplexity"]) + ([reference] if reference is not None else []))
    return _finish_sparsity_plot(fig, ax, "Perplexity vs sparsity", curves, model, path)


def _finish_sparsity_plot(fig, ax, title, table, model, path):
    """The common end of a perplexity-vs-sparsity plot: x in percent removed, labels, the title over
    ``_subtitle``, grid and legend; saved to ``path`` when given."""
    ax.set_xlim(0, 100)
    ax.set(xlabel="encoder Linear weights removed (%)", ylabel="masked-LM perplexity (log scale)")
    ax.set_title(f"{title}\n" + _subtitle(table, model), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, path)


SHORT_MODULE_NAMES = {"attention.self.query": "query", "attention.self.key": "key",
                      "attention.self.value": "value", "attention.output.dense": "attn out",
                      "intermediate.dense": "FFN in", "output.dense": "FFN out"}


def plot_layer_sensitivity(sensitivity, path=None, *, reference, fraction=None, model=None):
    """Heat map of the perplexity, relative to ``reference``, when one Linear layer is pruned.

    Rows: encoder layers; columns: the six Linear layers of a BERT layer. Each cell is labelled
    with perplexity / reference (``1.00`` = no harm).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    grid = sensitivity.pivot(index="layer", columns="module", values="perplexity") / reference
    grid = grid[[c for c in SHORT_MODULE_NAMES if c in grid.columns] + [c for c in grid.columns if c not in SHORT_MODULE_NAMES]]
    fig, ax = plt.subplots(figsize=(1.3 * grid.shape[1] + 2.5, 0.55 * grid.shape[0] + 2.2))
    high = max(float(grid.max().max()), 2.0)  # a 1% change stays pale: colours do not magnify noise
    image = ax.imshow(grid.clip(lower=1.0).values, cmap="Reds", norm=LogNorm(vmin=1.0, vmax=high), aspect="auto")
    for (i, j), value in __import__("numpy").ndenumerate(grid.values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if math.log(max(value, 1.0)) > 0.6 * math.log(high) else "black")
    ax.set_xticks(range(grid.shape[1]), [SHORT_MODULE_NAMES.get(c, c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"layer {i}" for i in grid.index])
    from matplotlib.ticker import FuncFormatter

    bar = fig.colorbar(image, ax=ax, label="perplexity / unpruned perplexity (log scale)")
    ticks = [t * 10 ** e for e in range(0, 6) for t in (1, 1.5, 2, 3, 5)]
    bar.set_ticks([t for t in ticks if t <= high])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    what = f"{fraction:.0%} of one layer's weights pruned" if fraction is not None else "one layer pruned"
    ax.set_title(f"Per-layer sensitivity: {what}, all others intact\n" + _subtitle(sensitivity, model), fontsize=10)
    return _save(fig, path)
