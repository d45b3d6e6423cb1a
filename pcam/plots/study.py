"""The recipe study at a glance: valid and test ROC AUC of every arm."""

from pathlib import Path

from pcam.plots.common import model_colour, new_figure, save_figure


def plot_study(rows: list[dict], path: str | Path | None = None):
    """Valid and test ROC AUC of each study arm, with 95% intervals on test.

    Args:
        rows: `pcam.report.study.study_rows` (arm, what, record), top to bottom.
        path: PNG file to write, e.g. `images/study.png`; None: do not save.

    Returns:
        The matplotlib `Figure`.
    """
    if not rows:
        raise ValueError("no complete study arm to plot")
    height = 0.32 * len(rows) + 1.4  # inches
    fig, axes = new_figure(1, 1, height=height)
    ax = axes[0][0]
    for i, row in enumerate(rows):
        colour = model_colour(row["record"]["model"])
        metrics = row["record"]["metrics"]
        test = metrics.get("test", {})
        single, tta = test.get("single"), test.get("tta")
        if single:
            low, high = single["ci"]["roc_auc"]
            ax.plot([low, high], [i, i], color=colour, lw=2, alpha=0.5)
            ax.plot(single["roc_auc"], i, "o", color=colour,
                    label="test (95% interval)" if i == 0 else None)
        if tta:
            ax.plot(tta["roc_auc"], i, "o", mfc="white", color=colour,
                    label="test, TTA" if i == 0 else None)
        valid = metrics.get("valid", {}).get("single")
        if valid:
            ax.plot(valid["roc_auc"], i, "x", color="grey", label="valid" if i == 0 else None)
    baseline = next((r for r in rows if r["arm"] == "baseline"), None)
    if baseline and baseline["record"]["metrics"].get("test", {}).get("single"):
        ax.axvline(baseline["record"]["metrics"]["test"]["single"]["roc_auc"], color="lightgrey",
                   lw=1, ls="--", zorder=0, label="baseline test")
    ax.set_yticks(range(len(rows)), [r["arm"] for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel="ROC AUC", title="Recipe study: one change per arm, same training budget")
    ax.grid(axis="x", color="#eeeeee")
    below_label = -0.55 / (0.75 * height)  # 0.55 in under the axes, as a fraction of them
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, below_label), ncol=4, fontsize="small",
              frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
