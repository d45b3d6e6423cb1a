"""The budget and data curves: ROC AUC against training minutes and training patches."""

from pathlib import Path

from pcam.plots.common import model_colour, new_figure, save_figure


def _auc(record: dict, split: str) -> tuple[float, float, float] | None:
    single = (record.get("metrics") or {}).get(split, {}).get("single") or {}
    if single.get("roc_auc") is None:
        return None
    low, high = (single.get("ci") or {}).get("roc_auc") or (single["roc_auc"],) * 2
    return single["roc_auc"], low, high


def plot_curves(points: list[dict], path: str | Path | None = None):
    """Two panels: ROC AUC against the training budget (every training patch), and
    test ROC AUC against training patches (at the data curve's budget).

    The budget, not the realised minutes, is the x axis: it is what both models
    were given (whole epochs planned from costs measured once); realised minutes
    move with the machine's load and are in the table beside the figure.

    Args:
        points: `pcam.report.curves.curve_points` (model, budget, patches, record).
        path: PNG file to write, e.g. `images/curves.png`; None: do not save.

    Returns:
        The matplotlib `Figure`.
    """
    if not points:
        raise ValueError("no complete curve point to plot")
    full = max(p["patches"] for p in points)
    shares = [p for p in points if p["patches"] < full]
    data_budget = shares[0]["budget"] if shares else None
    fig, axes = new_figure(1, 2, height=3.6)
    budget_ax, data_ax = axes[0]
    for model in dict.fromkeys(p["model"] for p in points):
        colour = model_colour(model)
        mine = [p for p in points if p["model"] == model]
        whole = sorted((p for p in mine if p["patches"] == full), key=lambda p: p["budget"])
        for split, style, fill in (("test", "-", colour), ("valid", "--", "white")):
            xs, ys, lows, highs = [], [], [], []
            for p in whole:
                found = _auc(p["record"], split)
                if found:
                    xs.append(p["budget"])
                    ys.append(found[0])
                    lows.append(found[0] - found[1])
                    highs.append(found[2] - found[0])
            if xs:
                budget_ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o" + style, color=colour,
                                   mfc=fill, capsize=3, label=f"{model}, {split}")
        data = sorted((p for p in mine if p["budget"] == data_budget), key=lambda p: p["patches"])
        xs, ys, lows, highs = [], [], [], []
        for p in data:
            found = _auc(p["record"], "test")
            if found:
                xs.append(p["patches"])
                ys.append(found[0])
                lows.append(found[0] - found[1])
                highs.append(found[2] - found[0])
        if xs:
            data_ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o-", color=colour, capsize=3,
                             label=f"{model}, test")
    budgets = sorted({p["budget"] for p in points if p["patches"] == full})
    budget_ax.set_xscale("log")
    budget_ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    budget_ax.minorticks_off()
    budget_ax.set(xlabel="training budget (minutes, log scale)", ylabel="ROC AUC",
                  title="Budget curve: every training patch")
    if shares:
        sizes = sorted({p["patches"] for p in points if p["budget"] == data_budget})
        data_ax.set_xscale("log", base=2)
        data_ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        data_ax.minorticks_off()
        data_ax.set(xlabel="training patches (log scale)", ylabel="test ROC AUC",
                    title=f"Data curve: {data_budget:g} minutes")
    else:  # no share of the patches complete yet: say so rather than draw empty axes
        data_ax.set_axis_off()
        data_ax.text(0.5, 0.5, "Data curve: no point on a share\nof the patches complete yet",
                     ha="center", va="center", transform=data_ax.transAxes, color="#666666")
    for ax in (budget_ax, data_ax):
        ax.grid(color="#eeeeee")
        if ax.has_data():
            ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
