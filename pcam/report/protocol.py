"""The protocol paragraph under the README table, written from the run records."""

from pcam.report.table import best_epoch, epochs_per_phase


def data_label(record: dict) -> str:
    """What data the numbers come from, in words a reader cannot misread.

    Synthetic data and the official PCam files say so; imported images use the
    `label` of their dataset.json (e.g. "PCam subset (JPEG)") and are marked as
    not the PCam test split.
    """
    data = record.get("data") or {}
    info = data.get("info") or {}
    source = str(info.get("source", ""))
    if data.get("synthetic") or info.get("synthetic"):
        return "synthetic patches (built-in generator), not PCam: a pipeline check only"
    if source.startswith("PCam, Zenodo"):
        return "PCam, official HDF5 files and splits"
    label = str(info.get("label") or f"images imported from `{info.get('folder', source)}`")
    # Anything imported is a re-encoded sample with its own splits.
    return label if "not the PCam" in label else f"{label}, not the PCam test split"


def _splits_text(record: dict) -> str:
    """Patches per split: those scored (from the metrics) where a split was scored."""
    splits = (record.get("data") or {}).get("splits") or {}
    metrics = record.get("metrics") or {}
    parts = []
    for name in ("train", "valid", "test"):
        s = (metrics.get(name) or {}).get("single") or splits.get(name)
        if s:
            scored = " scored" if name in metrics else ""
            parts.append(f"{name} {s['n']:,}{scored} ({s.get('positives', 0):,} positive)")
    return ", ".join(parts) or "unknown"


def _hardware(record: dict) -> str:
    return _hardware_of((record.get("environment") or {}).get("hardware") or {})


def _hardware_of(hw: dict) -> str:
    gpus = ", ".join(hw.get("gpus") or []) or "no GPU"
    return f"{hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} cores), {gpus}"


def _run_text(record: dict) -> str:
    config = record.get("config") or {}
    history = record.get("history") or []
    phase_text = " + ".join(f"{n} {p}" for p, n in epochs_per_phase(record).items()) or "none"
    best = best_epoch(record)
    best_text = f", best valid AUC at epoch {best['epoch']}" if best else ""
    augment = ", ".join(config.get("augment") or []) or "none"
    threshold = record.get("threshold") or {}
    tta = (f" (TTA: {threshold['tta_value']:.3f})" if "tta_value" in threshold else "")
    extra = ""
    if record.get("model") == "mobilenet":
        extra = f", alpha {config.get('alpha')}, weights {config.get('weights') or 'random'}"
    trained_on = (record.get("data") or {}).get("dir")
    elsewhere = [f"{name} scored later on `{m['data_dir']}` ({m.get('data_label', '?')}, "
                 f"{_hardware_of(m.get('hardware') or {})})"
                 for name, m in sorted((record.get("metrics") or {}).items())
                 if m.get("data_dir") and m["data_dir"] != trained_on]
    extra += "".join(f"; {text}" for text in elsewhere)
    return (
        f"- **{record.get('model')}** (run `{record.get('run')}`): {len(history)} "
        f"epoch{'s' if len(history) != 1 else ''} run "
        f"({phase_text}) of {config.get('epochs')} planned{best_text}; batch "
        f"{config.get('batch_size')}, augmentation {augment}, seed {config.get('seed')}{extra}; "
        f"threshold {threshold.get('value', 0.5):.3f}{tta}; "
        f"hardware {_hardware(record)}; data {_splits_text(record)}."
    )


def comparison_text(comparison: dict | None) -> str:
    """Markdown of `pcam.report.paired_comparison`'s result (empty for None)."""
    if not comparison:
        return ""
    if "note" in comparison:
        return f"**Paired comparison:** {comparison['note']}"
    a, b = comparison["models"]
    lo, hi = comparison["auc_ci"]
    return (
        f"**Paired comparison** on the same {comparison['n']:,} {comparison['split']} patches "
        f"(single pass): McNemar's test on correctness at each model's threshold, "
        f"p = {comparison['mcnemar_p']:.3g}; ROC AUC difference {a} − {b} = "
        f"{100 * comparison['auc_difference']:.1f} points "
        f"(paired bootstrap 95% CI {100 * lo:.1f} to {100 * hi:.1f})."
    )


def protocol_text(records: list[dict], comparison: dict | None = None,
                  figures: list[tuple[str, str]] = ()) -> str:
    """Markdown paragraphs saying how the table's numbers were made.

    Args:
        records: the published records, in table order.
        comparison: output of `pcam.report.paired_comparison` (or None).
        figures: (title, relative link) of the figures to list.

    Returns:
        Markdown text.
    """
    labels = sorted({data_label(r) for r in records})
    evaluated_train = all("train" in (r.get("metrics") or {}) for r in records)
    train = ("*train*: the first training patches of the file (N below) evaluated like "
             "valid and test, without augmentation"
             if evaluated_train else
             "*train*: Keras' running metrics at the best epoch (augmented batches, threshold "
             "0.5, no CI)")
    rules = sorted({(r.get("threshold") or {}).get("rule", "fixed 0.5") for r in records})
    lines = [
        f"**Data:** {'; '.join(labels)}.",
        "",
        f"**Columns.** {train}. *valid*: chooses the checkpoint (best valid AUC) and the "
        "threshold, so it is optimistic. *test*: evaluated once with that checkpoint and "
        "threshold; *TTA*: mean over the 8 flips/rotations, with its own threshold chosen the "
        "same way. Accuracy, precision, recall and F1 are computed once over all patches of the "
        "split at the chosen threshold; ± is the half-width of a bootstrap 95% confidence "
        "interval over patches. Inference time is for the patches scored (N below) on the "
        "hardware below.",
        "",
        f"**Threshold rule:** {'; '.join(rules)}.",
        "",
    ]
    info = ((records[0].get("data") or {}).get("info") or {}) if records else {}
    mapping = info.get("mapping")
    if isinstance(mapping, dict):
        lines += ["**Split mapping:** " + "; ".join(f"{k}: {mapping[k]}" for k in sorted(mapping))
                  + ".", ""]
    lines += [_run_text(r) for r in records]
    text = comparison_text(comparison)
    if text:
        lines += ["", text]
    if figures:
        lines += ["", "**Figures:** " + " · ".join(f"[{t}]({link})" for t, link in figures)]
    return "\n".join(lines)
