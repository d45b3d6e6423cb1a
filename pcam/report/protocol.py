"""The protocol paragraph under the README table, written from the run records."""

from pcam.report.table import CI_ROW, best_epoch, ci_unit, epochs_per_phase

# The rule records carried before it named its tie rule; numpy's argmax then took
# the first maximum of J, which is the highest of tied thresholds.
_UNTIED_RULE = ("maximise Youden's J (sensitivity + specificity - 1) on the validation split; "
                "threshold placed midway between the two adjacent distinct predicted "
                "probabilities")


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
    auc = (f"ROC AUC difference {a} − {b} = {100 * comparison['auc_difference']:.1f} points "
           f"(paired bootstrap over {comparison.get('unit', 'patches')}, 95% CI "
           f"{100 * lo:.1f} to {100 * hi:.1f})")
    where = f"on the same {comparison['n']:,} {comparison['split']} patches"
    if comparison.get("unit") == "slides":
        acc_lo, acc_hi = comparison["accuracy_ci"]
        return (
            f"**Paired comparison** {where} from {comparison['n_slides']:,} slides (single "
            f"pass; {comparison['n_boot']:,} resamples of whole slides, seed "
            f"{comparison['seed']}): accuracy difference {a} − {b} at each model's threshold = "
            f"{100 * comparison['accuracy_difference']:.1f} points (95% CI {100 * acc_lo:.1f} "
            f"to {100 * acc_hi:.1f}, p = {comparison['accuracy_p']:.3g}); {auc}. This paired "
            "bootstrap over slides replaces McNemar's test, which would count the correlated "
            "patches of one slide as independent evidence."
        )
    return (
        f"**Paired comparison** {where} (single pass): McNemar's test on correctness at each "
        f"model's threshold, p = {comparison['mcnemar_p']:.3g}; {auc}. Without slide ids both "
        "treat the patches as independent, so p and the interval are likely too optimistic."
    )


def _ci_text(records: list[dict]) -> str:
    """The sentence on what ± means: over slides, over patches, or each where it applies."""
    scored = [(r, s, v) for r in records for s in ("train", "valid", "test")
              for v in ("single", "tta") if ci_unit(r, s, v)]
    units = {ci_unit(r, s, v) for r, s, v in scored}
    seeds = sorted({(r["metrics"][s][v].get("bootstrap_seed", 0), r["metrics"][s][v]["n_boot"])
                    for r, s, v in scored})
    how = "; ".join(f"{n:,} resamples, seed {seed}" for seed, n in seeds)
    how = f" ({how})" if how else ""
    text = "± is the half-width of a bootstrap 95% confidence interval"
    if units == {"slides"}:
        return (f"{text} over slides{how}: whole slides (the meta files' `wsi`) are resampled, "
                "since patches of one slide are correlated.")
    if units == {"patches"}:
        few = any("too few to resample" in note for r, s, v in scored
                  for note in r["metrics"][s][v].get("notes", []))
        why = f"these data have {'too few slides to resample' if few else 'no slide ids'}"
        return (f"{text} over patches{how}, resampled one by one: {why}, and patches of one slide "
                "are correlated (same patient, stain and scanner), so these intervals are likely "
                "too narrow.")
    return (f"{text}{how} over slides where the data have slide ids and over patches "
            f"elsewhere (row \"{CI_ROW}\"); patches of one slide are correlated, so the "
            "intervals over patches are likely too narrow.")


def _valid_note(records: list[dict]) -> str:
    """Why valid is optimistic beyond the choices made on it, for data imported with a hold-out."""
    info = ((records[0].get("data") or {}).get("info") or {}) if records else {}
    holdout = info.get("holdout")
    if info.get("source") != "images" or not isinstance(holdout, int) or holdout <= 0:
        return ""
    test = (info.get("mapping") or {}).get("test")
    test_text = f" (`{test}`)" if test else ""
    return (f" Here it is optimistic for a second reason: valid is {holdout:,} patches held out "
            f"at random from the imported train images, so it comes from the same slides as "
            f"train, while test{test_text} is a "
            "separate split of the source, which for PCam means other slides: valid scores track "
            "train's, not test's.")


def _rule_text(threshold: dict | None) -> str:
    rule = (threshold or {}).get("rule", "fixed 0.5")
    if rule == _UNTIED_RULE:
        return rule + ("; the rule named no tie-break: of tied maxima of J the highest "
                       "threshold was taken (the first maximum)")
    return rule


def protocol_text(records: list[dict], comparison: dict | None = None,
                  figures: list[tuple[str, str]] = ()) -> str:
    """Markdown paragraphs saying how the table's numbers were made.

    Args:
        records: the published records, in table order.
        comparison: output of `pcam.report.paired_comparison` (or None).
        figures: (title, relative link) of the figures to list, or (title,
            link, note): the note, e.g. that the figure needs a checkpoint, is
            printed once under the list and its figures marked.

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
    rules = sorted({_rule_text(r.get("threshold")) for r in records})
    lines = [
        f"**Data:** {'; '.join(labels)}.",
        "",
        f"**Columns.** {train}. *valid*: chooses the checkpoint (best valid AUC) and the "
        f"threshold, so it is optimistic.{_valid_note(records)} *test*: evaluated once with "
        "that checkpoint and "
        "threshold; *TTA*: mean over the 8 flips/rotations, with its own threshold chosen the "
        "same way. Accuracy, precision, recall and F1 are computed once over all patches of the "
        f"split at the chosen threshold; {_ci_text(records)} Inference time is for the patches "
        "scored (N below) on the "
        "hardware below. Timings are rounded to two significant figures: on a shared machine "
        "they vary up to 2x between runs.",
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
    if figures:  # a third element is a note on the figure, shown once under a mark
        notes = list(dict.fromkeys(f[2] for f in figures if len(f) > 2))
        marks = dict(zip(notes, "†‡§¶", strict=False))
        lines += ["", "**Figures:** " + " · ".join(
            f"[{f[0]}]({f[1]}){marks[f[2]] if len(f) > 2 else ''}" for f in figures)]
        for note, mark in marks.items():
            lines += ["", f"{mark} {note}."]
    return "\n".join(lines)
