"""`python -m pcam report`: figures and the README results block from `results/`.

Nothing is retrained: figures come from the records and saved predictions;
Grad-CAM and model diagrams also need the run's checkpoint (and, for Grad-CAM,
the data), and are skipped with a note when those are absent.
"""

import os
import re
from pathlib import Path

from pcam import plots
from pcam.core.errors import PCamError
from pcam.core.fileio import write_bytes, write_text
from pcam.core.paths import DOCS_DIR, IMAGES_DIR, README, results_dir, terminal_path
from pcam.evaluation.compare import paired_comparison
from pcam.evaluation.gradcam import select_cases
from pcam.evaluation.predictions import load_predictions
from pcam.report.curves import update_curves_block
from pcam.report.inputs import common_split, load_records, published_records, waiting_runs
from pcam.report.model_card import write_model_card
from pcam.report.protocol import protocol_text
from pcam.report.provenance import NEEDS_CHECKPOINT, check_clean, dirty_note
from pcam.report.study import update_study_block
from pcam.report.table import END, START, replace_block, results_table

_NO_RUNS = ("No published run yet. Train with `--published` (notebook: `PUBLISHED = True`; or "
            "set `\"published\": true` in `results/<run>/record.json`), then run "
            "`python -m pcam report`.")


def _stored_data_dir(record: dict, split: str) -> str | None:
    # an evaluation on another data folder records it per split
    stored = (record.get("metrics") or {}).get(split, {}).get("data_dir")
    return stored or (record.get("data") or {}).get("dir")


def _recorded_split(record: dict, name: str):
    """The split `name` of the data `record`'s run was trained on, checked against the
    record's data fingerprint; `PCamError` saying why it cannot be used otherwise."""
    from pcam.core.paths import data_dir, from_display_path
    from pcam.data.describe import fingerprint, fingerprint_changes
    from pcam.data.h5read import open_split

    stored = _stored_data_dir(record, name)
    folder = from_display_path(stored) or data_dir()
    try:
        split = open_split(folder, name)
    except PCamError as error:
        if stored and from_display_path(stored) is None:  # records keep no outside paths
            raise PCamError(f"run {record['run']} used data outside the project ({stored}), "
                            f"and {terminal_path(folder)} does not hold its {name} split; "
                            "set PCAM_DATA_DIR to that data folder") from error
        raise
    recorded = ((record.get("data") or {}).get("fingerprint") or {}).get(name)
    if recorded is None:
        raise PCamError(f"the record has no fingerprint of its {name} split, so "
                        f"{terminal_path(folder)} cannot be checked against it")
    changed, _ = fingerprint_changes({name: recorded}, fingerprint({name: split}))
    if changed:
        raise PCamError(f"{terminal_path(folder)} is not the data run {record['run']} was "
                        f"trained on ({changed[0]}); set PCAM_DATA_DIR to that data")
    return split


def _checkpoint_figures(run_dir: Path, record: dict, pred, images: Path) -> list[str]:
    """Model diagram and Grad-CAM grid from the run's model (its committed inference model,
    else its best checkpoint); notes on what was skipped."""
    from pcam.models import BEST_CHECKPOINT, INFERENCE_MODEL

    name = plots.slug(record["model"])
    best = (record.get("checkpoints") or {}).get("best") or BEST_CHECKPOINT
    checkpoint = next((path for path in (run_dir / INFERENCE_MODEL, run_dir / best)
                       if path.exists()), run_dir / best)
    if not checkpoint.exists():  # one line per figure: which, and the file it needs
        return [f"{record['run']}: {record['model']} {title} ({terminal_path(figure)}) needs "
                f"{terminal_path(checkpoint)}, which is missing (checkpoints are not committed); "
                + ("the file an earlier report drew is kept" if figure.exists() else "not drawn")
                for title, figure in (("Grad-CAM", images / f"{name}_gradcam.png"),
                                      ("diagram", images / f"{name}_model.png"))]
    try:
        import keras

        model = keras.models.load_model(checkpoint, compile=False)
    except (ImportError, OSError, ValueError, TypeError) as error:
        return [f"{record['run']}: could not load {terminal_path(checkpoint)} ({error}); "
                "Grad-CAM and model diagram skipped"]
    notes = []
    if plots.plot_model_diagram(model, images / f"{name}_model.png") is None:
        notes.append(f"{record['run']}: model diagram skipped (no graphviz)")
    if pred is None:
        return notes + [f"{record['run']}: no predictions; Grad-CAM skipped"]
    try:
        from pcam.data.h5read import read_images, read_labels

        split = _recorded_split(record, pred.split)
        cases = select_cases(pred.y_true, pred.y_prob, pred.threshold, per_case=4, seed=0)
        wanted = sorted({int(i) for index in cases.values() for i in index})
        labels = read_labels(split)
        if len(labels) < len(pred.y_true) or (labels[:len(pred.y_true)] != pred.y_true).any():
            raise PCamError(f"labels in {terminal_path(split.y_path)} differ from the predictions")
        patches = {i: read_images(split, i, i + 1)[0] for i in wanted}
    except PCamError as error:
        return notes + [f"{record['run']}: Grad-CAM skipped ({error})"]
    plots.plot_gradcam_grid(model, patches, pred.y_prob, cases, images / f"{name}_gradcam.png",
                      title=f"Grad-CAM, {record['model']}, {pred.split} split")
    return notes


def _data_figures(record: dict, images: Path) -> list[str]:
    """Patches of each class and one patch under each augmentation, from a run's train split."""
    from pcam.data.h5read import read_images, read_labels

    try:
        split = _recorded_split(record, "train")
    except PCamError as error:
        kept = "the files an earlier report drew are kept" if (
            images / "samples.png").exists() else "not drawn"
        return [f"sample and augmentation figures: {kept} ({error})"]
    n = min(256, split.length)
    plots.plot_sample_grid(read_images(split, 0, n), read_labels(split)[:n],
                           images / "samples.png")
    plots.plot_augmentations(read_images(split, 0, 1)[0], images / "augmentations.png", seed=0)
    return []


def _figures(rows, images: Path, *, gradcam: bool) -> tuple[list[tuple], list, list]:
    """Write every figure; return (title, file name[, note]), eval predictions, notes."""
    records = [record for _, record in rows]
    written, notes = [], []
    # Evaluation figures use test when every run has it, else valid. Predictions are read
    # before any figure is drawn: a damaged file is named before the work, not after it.
    split = common_split(records)
    preds = [load_predictions(d, r, split) for d, r in rows] if split else []
    if gradcam:  # like Grad-CAM, these need the data, not only the records
        notes += _data_figures(records[0], images)
    for title, file in (("sample patches", "samples.png"), ("augmentations", "augmentations.png")):
        if (images / file).exists():
            written.append((title, file))
    for record in records:
        name = plots.slug(record["model"])
        if record.get("history"):
            plots.plot_training_curves(record, images / f"{name}_curves.png")
            written.append((f"{record['model']} curves", f"{name}_curves.png"))
    if all(r.get("history") for r in records):
        plots.plot_compared_curves(records, images / "compare_curves.png")
        written.append(("valid curves compared", "compare_curves.png"))
    if preds and all(p is not None for p in preds):
        plots.plot_roc_pr(preds, images / "compare_roc_pr.png")
        plots.plot_reliability(preds, images / "compare_reliability.png")
        written += [("ROC and PR", "compare_roc_pr.png"),
                    ("calibration", "compare_reliability.png")]
    else:
        preds, notes = [], notes + ["no predictions on a common split; ROC/PR/calibration skipped"]
    if split and all(split in (r.get("metrics") or {}) for r in records):
        plots.plot_confusion(records, split, images / "compare_confusion.png")
        written.append(("confusion matrices", "compare_confusion.png"))
    for (run_dir, record), pred in zip(rows, preds or [None] * len(rows), strict=True):
        if gradcam:
            notes += _checkpoint_figures(run_dir, record, pred, images)
        name = plots.slug(record["model"])
        for kind, title in (("gradcam", "Grad-CAM"), ("model", "diagram")):
            if (images / f"{name}_{kind}.png").exists():
                written.append((f"{record['model']} {title}", f"{name}_{kind}.png",
                                NEEDS_CHECKPOINT))
    return written, preds, notes


def _table_models(text: str) -> set[str]:
    """The models whose columns the results table between the markers shows now."""
    block = text.split(START, 1)[-1].split(END, 1)[0]
    header = next((line for line in block.splitlines() if line.startswith("| metric |")), "")
    return {cell.split()[0] for cell in header.strip(" |").split("|")[1:] if cell.split()}


def _links(text: str) -> set[str]:
    return set(re.findall(r"\]\(([^)\s]+)\)", text))


def _lost(old: str, new: str) -> list[str]:
    """What the results block shows now that the rebuilt one would not."""
    lost = [f"the link to {link}" for link in sorted(_links(old) - _links(new))]
    if "**Paired comparison** " in old and "**Paired comparison** " not in new:
        lost.append("the paired comparison")
    return lost


def _check_writable(path: Path) -> None:
    """`PCamError` before any figure is drawn when `path` cannot be replaced."""
    folder = path.parent if str(path.parent) else Path(".")
    for target, what in ((path, "file"), (folder, "folder")):
        if target.exists() and not os.access(target, os.W_OK):
            raise PCamError(f"{terminal_path(target)} is a read-only {what}, so the report "
                            "cannot update it; make it writable (chmod u+w) and rerun; "
                            "nothing was changed")


def _keep_block(readme: Path, why: str, what: str) -> None:
    print(f"note: the results block of {terminal_path(readme)} is kept as it is")
    raise PCamError(f"{why}, so the results block of {terminal_path(readme)} was kept; {what}")


def build_report(results=None, readme=None, images=None, *, gradcam: bool = True,
                 published_only: bool = True, drop_missing: bool = False,
                 allow_dirty: bool = False, pages=None) -> None:
    """Rebuild `images/` and the README results block from the published records.

    The block between `<!-- results:start -->` and `<!-- results:end -->` is
    replaced (atomically); the rest of the README is left as it is. The output
    depends only on the records and predictions, so running it twice gives the
    same README. A table is never removed that cannot be rebuilt: with no
    published run (only an empty block gets the "No published run yet" note)
    or none of a model the table shows (unless `drop_missing`), the block is
    kept and `PCamError` raised. Scores on other data (`external`) stay out.
    A published run trained from a dirty tree (`environment.git.dirty`) is
    refused unless `allow_dirty`; then, and always for `published_only=False`
    (the demo runs wherever it is started), a note under the table names it.

    Args:
        results: records folder; default `$PCAM_RESULTS_DIR` or `results/`.
        readme: README to update; default the project's README.md.
        images: figures folder; default `images/`.
        gradcam: also draw Grad-CAM grids and model diagrams (needs checkpoints).
        published_only: False reports every run in `results` (one per model),
            for a demo folder with its own README-like file.
        drop_missing: rebuild the table without a model that has no published
            run any more (says which), or without a figure link or the paired
            comparison that can no longer be rebuilt (a missing predictions file).
        allow_dirty: publish runs trained from a dirty tree, named under the table.
        pages: other Markdown files whose study and curves blocks are rebuilt too
            (default: `docs/*.md` of the project for its README, none for
            another README); a file without those markers is left alone.

    Raises:
        PCamError: README, its markers or the results folder missing; two
            published runs of one model; no run to rebuild the table from; a
            published run from a dirty tree without `allow_dirty` (nothing is written).
    """
    readme = Path(readme) if readme else README
    images = Path(images) if images else IMAGES_DIR
    if not readme.exists():
        raise PCamError(f"{terminal_path(readme)} does not exist; give --readme")
    text = readme.read_text()
    replace_block(text, "", name=terminal_path(readme))  # check the markers before any work
    _check_writable(readme)
    folder = results_dir(results)
    if not folder.is_dir():
        raise PCamError(f"results folder {folder} does not exist; give --results "
                        "the folder that holds the runs (default $PCAM_RESULTS_DIR or results/)")
    everything = load_records(results)
    rows = published_records(everything, published_only=published_only)
    if published_only:
        for run_dir, _ in waiting_runs(everything):
            print(f"note: {terminal_path(run_dir)} is published but waits: its experiment has "
                  "no complete published run yet of every model, so the table keeps "
                  f"{', '.join(r.get('run', d.name) for d, r in rows) or 'its runs'}")
    if published_only:
        check_clean([record for _, record in rows], allow_dirty=allow_dirty)
    shown, current = _table_models(text), text.split(START, 1)[1].split(END, 1)[0].strip()
    dropped = sorted(shown - {record["model"] for _, record in rows})
    if not rows and current:
        _keep_block(readme, f"no published run in {folder}",
                    "train one with --published (or set \"published\": true in its "
                    "record.json), or give --results the folder that holds the runs")
    if rows and dropped and not drop_missing:
        _keep_block(readme, f"the table shows {', '.join(dropped)}, which has no published run "
                    f"in {folder}", "publish one, or pass --drop-missing to "
                    "rebuild the table without it")
    if dropped and rows:
        print(f"report: dropping {', '.join(dropped)} from the table (no published run)")
    if images.exists() and not images.is_dir():
        raise PCamError(f"{images} is a file, not a folder: give --images the folder for the "
                        "figures (it is created if missing); nothing was changed")
    figures = _snapshot(images)
    try:
        _write_pages(rows, images, readme, text, current, folder, notes=[], gradcam=gradcam,
                     drop_missing=drop_missing, pages=pages)
    except BaseException:
        _restore(images, figures)  # a refusal leaves the figures as they were too
        raise
    print(f"report: {terminal_path(readme)} results block, figures in {terminal_path(images)}")


def _snapshot(images: Path) -> dict[Path, bytes]:
    """The figures in `images` now, to put back if the report is refused half-way."""
    return {p: p.read_bytes() for p in images.glob("*.png")} if images.is_dir() else {}


def _restore(images: Path, figures: dict[Path, bytes]) -> None:
    for path in images.glob("*.png") if images.is_dir() else ():
        if path not in figures:
            path.unlink(missing_ok=True)
    for path, data in figures.items():
        if not path.exists() or path.read_bytes() != data:
            write_bytes(path, data)


def _write_pages(rows, images: Path, readme: Path, text: str, current: str, folder: Path, *,
                 notes: list, gradcam: bool, drop_missing: bool, pages) -> None:
    """Draw the figures, build every block, and write the README and pages (or refuse)."""
    if not rows:
        block = _NO_RUNS
        print(f"note: no published run in {folder}; the empty results block "
              "now says how to publish one")
    else:
        written, preds, notes = _figures(rows, images, gradcam=gradcam)
        prefix = Path(os.path.relpath(images, readme.parent)).as_posix()
        records = [r for _, r in rows]
        block = "\n\n".join(filter(None, [
            results_table(records), dirty_note(records),
            protocol_text(records, paired_comparison(preds),
                          [(title, f"{prefix}/{file}", *note) for title, file, *note in written]),
        ]))
        notes += [f"{r['run']}: status {r.get('status')!r}, numbers may be partial"
                  for r in records if r.get("status") != "complete"]
        for note in notes:
            print(f"note: {note}")
        lost = _lost(current, block)
        if lost and not drop_missing:
            causes = "; ".join(n for n in notes if "skipped" in n or "missing" in n)
            _keep_block(readme, f"the rebuilt block would lose {', '.join(lost)}"
                        + (f" ({causes})" if causes else ""),
                        "restore what is missing (a run's predictions/<split>.npz: rerun "
                        "`python -m pcam evaluate --run RUN`), or pass --drop-missing to "
                        "rebuild without it")
    updates = {readme: (text, replace_block(text, block, name=terminal_path(readme)))}
    if pages is None:
        pages = sorted(DOCS_DIR.glob("*.md")) if readme.resolve() == README.resolve() else []
    for page in map(Path, pages):
        if page != readme and page.is_file():
            _check_writable(page)
            updates[page] = (page.read_text(),) * 2
    for page, (old, new) in list(updates.items()):  # every block built before any is written
        prefix = Path(os.path.relpath(images, page.parent)).as_posix()
        new = update_study_block(new, folder / "study", images, prefix, name=terminal_path(page))
        new = update_curves_block(new, folder / "curves", images, prefix,
                                  name=terminal_path(page))
        updates[page] = (old, new)
    for page, (old, new) in updates.items():
        if new != old:
            write_text(page, new)
    for run_dir, record in rows:  # each run in the table gets its card
        write_model_card(record, run_dir, folder)
