"""The recipe study at a glance: each arm's valid AUC difference to its baseline, per seed."""

from pathlib import Path

import matplotlib.pyplot as plt

from pcam.plots.common import WIDTH_IN, model_colour, save_figure

_MARKERS = "os^D"  # seed 0, 1, 2, 3


def plot_study(rows: list[dict], diffs: dict, path: str | Path | None = None):
    """Paired valid ROC AUC difference (points) of each arm to its baseline, with 95% intervals.

    One panel per model (their effects differ in scale), arms top to bottom in
    table order, one marker per seed.

    Args:
        rows: `pcam.report.study.study_rows` (arm, name, seed, record, baseline).
        diffs: `pcam.report.study.paired_differences` ({arm: {"diff", "ci"} or None}).
        path: PNG file to write, e.g. `images/study.png`; None: do not save.

    Returns:
        The matplotlib `Figure`.
    """
    panels: dict[str, list[str]] = {}
    for row in rows:
        if row["baseline"] and diffs.get(row["arm"]) is not None:
            names = panels.setdefault(row["record"]["model"], [])
            if row["name"] not in names:
                names.append(row["name"])
    if not panels:
        raise ValueError("no study arm with a paired difference to plot")
    heights = [0.34 * len(names) + 0.9 for names in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH_IN, sum(heights) + 0.8),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    seeds = set()
    for ax, (model, names) in zip(axes[:, 0], panels.items(), strict=True):
        colour = model_colour(model)
        for row in rows:
            found = diffs.get(row["arm"])
            if row["record"]["model"] != model or not row["baseline"] or found is None:
                continue
            seed = row["seed"]
            seeds.add(seed)
            y = names.index(row["name"]) + 0.18 * (seed - 0.5)
            low, high = (100 * v for v in found["ci"])
            ax.plot([low, high], [y, y], color=colour, lw=2, alpha=0.5)
            ax.plot(100 * found["diff"], y, _MARKERS[seed % len(_MARKERS)], color=colour,
                    mfc="white" if seed else colour)
        ax.axvline(0, color="grey", lw=1, ls="--", zorder=0)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_title(f"{model}: arm minus its baseline, same seed", fontsize="medium")
        ax.grid(axis="x", color="#eeeeee")
    axes[-1, 0].set_xlabel("valid ROC AUC difference (AUC points, paired 95% interval)")
    for seed in sorted(seeds):
        axes[0, 0].plot([], [], _MARKERS[seed % len(_MARKERS)], color="grey",
                        mfc="white" if seed else "grey", label=f"seed {seed}")
    fig.legend(loc="lower center", ncol=4, fontsize="small", frameon=False)
    fig.suptitle("Recipe study: one change per arm, paired with its baseline")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, path)
