"""Score a user's own patches with a run's model: `python -m pcam predict`.

The patches (a folder of images, a PCam x file or one image:
`pcam.data.user_patches`) are streamed in batches through the `Predictor` that
`pcam evaluate` uses, as the same uint8 patches, so on the same patches the
probabilities equal `predict_split`'s. Labels use the run's threshold, chosen
on its valid split (its TTA threshold for the TTA column).

The CSV is written row by row into a temporary file beside its destination and
renamed over it at the end (`pcam.core.fileio.atomic_path`): it appears whole
or not at all, and a run that fails keeps an earlier file of that name. Columns
of `--format csv`: id, source, true_label (when INPUT has labels), probability,
label, probability_tta and label_tta (with TTA), converted_from (image input:
the mode converted to RGB, else empty). `--format kaggle` writes Kaggle's
submission: `id,label`, the label being the probability (the TTA mean with TTA).
With labels (a y file beside an x file, or 0/ and 1/ subfolders), ROC AUC and
accuracy get bootstrap 95% intervals from `evaluate_predictions`, over slides
when PCam's meta CSV lies beside the x file, as `pcam evaluate` scores a split.
"""

import csv
import os
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pcam.core import paths
from pcam.core.errors import PCamError
from pcam.core.fileio import atomic_path
from pcam.data.names import not_a_file, shown
from pcam.data.spec import PATCH_SHAPE
from pcam.data.user_patches import (
    HDF5_SUFFIXES,
    IMAGE_SUFFIXES,
    UserPatches,
    find_patches,
    read_batches,
)
from pcam.evaluation.metrics import evaluate_predictions
from pcam.evaluation.predict import EVAL_BATCH, Predictor
from pcam.models import float32_copy, load_run_model, run_model_file
from pcam.run.records import read_record, run_path

FORMATS = ("csv", "kaggle")
DEFAULT_OUT = "predictions.csv"
_SHOWN = 5  # converted files named on the terminal
_MODES = {"RGBA": "RGBA with an opaque alpha", "P": "8-bit palette (P)"}


def predict_patches(run: str | os.PathLike, source: str | os.PathLike, *,
                    out: str | os.PathLike | None = None, tta: bool = False, fmt: str = "csv",
                    batch_size: int = EVAL_BATCH, progress: bool = True) -> dict:
    """Predict a run's model on a user's patches; write the CSV and print what it did.

    Args:
        run: run name (a folder of `results/`) or run folder.
        source: INPUT: a folder of images, a PCam x file or one image
            (`pcam.data.user_patches`).
        out: the CSV to write; default `predictions.csv` in the current folder.
            An existing file is replaced only once every patch is scored.
        tta: also predict the mean over the 8 dihedral transforms.
        fmt: "csv" (every column) or "kaggle" (`id,label`, label = probability).
        batch_size: patches per inference batch, >= 1.
        progress: show a progress bar on a terminal (stderr).

    Returns:
        The summary `score_patches` returns, plus run and model_file.

    Raises:
        PCamError: no run record, no threshold (valid never scored) or no model
            file; a bad INPUT or patch (named, see `pcam.data.user_patches`);
            an --out that cannot be written. Nothing is written then.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    folder = run_path(run)
    record = read_record(folder)
    threshold = _threshold(record)
    patches = find_patches(source)
    target = _out_path(out)
    model_file = run_model_file(folder)  # said before the model loads
    for note in patches.notes:
        print(f"predict: {note}", flush=True)
    tta_cut = f", TTA {threshold['tta_value']:.4f}" if tta and "tta_value" in threshold else ""
    where = paths.display_path(model_file)  # in the project: from its root
    where = shown(model_file) if where.startswith("<external>") else where
    print(f"predict: run {record['run']}, model {where}, threshold "
          f"{threshold['value']:.4f}{tta_cut} (chosen on its valid split); {patches.count:,} "
          f"patch{'es' if patches.count != 1 else ''} from {shown(patches.path)}", flush=True)
    predictor = Predictor(float32_copy(load_run_model(folder))[0])  # scored in float32
    summary = score_patches(predictor, patches, target, threshold, tta=tta, fmt=fmt,
                            batch_size=batch_size, progress=progress)
    summary.update(run=record["run"], model_file=model_file)
    for line in summary_lines(summary):
        print(line)
    return summary


def score_patches(predictor: Predictor, patches: UserPatches, out: Path, threshold: dict, *,
                  tta: bool = False, fmt: str = "csv", batch_size: int = EVAL_BATCH,
                  progress: bool = False) -> dict:
    """Score every patch in batches and write the CSV atomically (see the module docstring).

    Args:
        predictor: the model's inference functions (`pcam.evaluation.predict.Predictor`).
        patches: from `pcam.data.user_patches.find_patches`.
        out: the CSV to write; its folder must exist.
        threshold: the record's `threshold` section (`value`, maybe `tta_value`).
        tta, fmt, batch_size, progress: as for `predict_patches`.

    Returns:
        dict: n, positives (at the threshold), threshold, and with TTA
        tta_positives and tta_threshold; converted ({mode: count}) and
        converted_examples (up to 5 sources); y_prob (and y_prob_tta) float32;
        metrics ({"single": ..., "tta": ...} from `evaluate_predictions`, or
        None without labels), label_source; out (the real path written),
        format, columns, seconds and images_per_s (reading, scoring and
        writing, after tracing).
    """
    n = patches.count
    probs = {"single": np.empty(n, np.float32)}
    if tta:
        probs["tta"] = np.empty(n, np.float32)
    cuts = {"single": threshold["value"], "tta": threshold.get("tta_value", threshold["value"])}
    columns = _columns(patches, fmt, tta)
    converted: Counter = Counter()
    examples: list[str] = []
    for fn in (predictor.single, predictor.tta) if tta else (predictor.single,):
        fn(np.zeros((1, *PATCH_SHAPE), np.uint8))  # trace first: patches/s times the work
    start = time.perf_counter()
    with atomic_path(out) as temp:
        with (open(temp, "w", newline="", encoding="utf-8") as file,
              closing(read_batches(patches, batch_size)) as batches,
              tqdm(total=n, unit="patch", desc="predict", mininterval=0.5,
                   disable=None if progress else True) as bar):
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(columns)
            for batch in batches:
                rows = range(batch.start, batch.start + len(batch.images))
                probs["single"][rows.start:rows.stop] = _run(predictor.single, batch.images)
                if tta:
                    probs["tta"][rows.start:rows.stop] = _run(predictor.tta, batch.images)
                for i, mode in zip(rows, batch.converted, strict=True):
                    if mode is not None:
                        converted[mode] += 1
                        if len(examples) < _SHOWN:
                            examples.append(patches.source(i))
                writer.writerows(_row(patches, i, probs, cuts, fmt, batch.converted[k])
                                 for k, i in enumerate(rows))
                bar.update(len(rows))
    seconds = max(time.perf_counter() - start, 1e-9)
    summary = {"n": n, "threshold": cuts["single"],
               "positives": int(np.count_nonzero(probs["single"] >= cuts["single"])),
               "converted": dict(converted), "converted_examples": examples,
               "y_prob": probs["single"], "metrics": None, "label_source": patches.label_source,
               "kind": patches.kind, "out": Path(os.path.realpath(out)), "format": fmt,
               "columns": columns, "seconds": seconds, "images_per_s": n / seconds}
    if tta:
        summary.update(y_prob_tta=probs["tta"], tta_threshold=cuts["tta"],
                       tta_positives=int(np.count_nonzero(probs["tta"] >= cuts["tta"])))
    if patches.labels is not None:
        summary["metrics"] = {name: evaluate_predictions(patches.labels, p, cuts[name],
                                                         slides=patches.slides)
                              for name, p in probs.items()}
    return summary


def summary_lines(summary: dict) -> list[str]:
    """What `predict_patches` prints after scoring: counts, conversions, metrics, the file."""
    n = summary["n"]
    line = (f"predict: {n:,} patch{'es' if n != 1 else ''}, {summary['positives']:,} predicted "
            f"positive at threshold {summary['threshold']:.4f}")
    if "tta_positives" in summary:
        line += f" (TTA: {summary['tta_positives']:,} at {summary['tta_threshold']:.4f})"
    lines = [line + f"; {summary['images_per_s']:,.1f} patches/s"]
    if summary["kind"] != "hdf5":
        converted = summary["converted"]
        if converted:
            kinds = ", ".join(f"{count:,} {_MODES.get(mode, mode)}"
                              for mode, count in sorted(converted.items()))
            where = ("the CSV's converted_from column names each" if summary["format"] == "csv"
                     else "--format csv names each in its converted_from column")
            lines.append(f"predict: converted to RGB without loss: {sum(converted.values()):,} "
                         f"image(s) ({kinds}), e.g. {', '.join(summary['converted_examples'])}; "
                         f"{where}")
        else:
            lines.append("predict: converted to RGB: none (every image was RGB)")
    metrics = summary["metrics"]
    if metrics is None:
        lines.append("predict: no labels beside INPUT (a y file beside an x file, or 0/ and 1/ "
                     "subfolders), so no metrics")
    else:
        for name, scores in metrics.items():
            what = f"labels from {summary['label_source']}" if name == "single" else "TTA"
            lines.append(f"predict: {what}: {_metrics_text(scores)}")
    lines.append(f"predict: wrote {summary['out']} ({summary['format']}: "
                 f"{','.join(summary['columns'])})")
    return lines


def _metrics_text(scores: dict) -> str:
    """ROC AUC and accuracy with their 95% bootstrap intervals, in one line."""
    def value(point: float | None, ci: list | None) -> str:
        if point is None:
            return "undefined (one class only)"
        return f"{point:.4f}" + (f" (95% CI {ci[0]:.4f} to {ci[1]:.4f})" if ci else "")

    unit = (f"{scores['n_slides']} slides" if scores["bootstrap_unit"] == "slides"
            else "patches")
    return (f"ROC AUC {value(scores['roc_auc'], scores['ci'].get('roc_auc'))}, accuracy "
            f"{value(scores['at_chosen']['accuracy'], scores['ci'].get('at_chosen.accuracy'))}"
            f" at the threshold; bootstrap over {unit}, {scores['n_boot']:,} replicates")


def _columns(patches: UserPatches, fmt: str, tta: bool) -> list[str]:
    if fmt == "kaggle":
        return ["id", "label"]
    columns = ["id", "source"] + (["true_label"] if patches.labels is not None else [])
    columns += ["probability", "label"] + (["probability_tta", "label_tta"] if tta else [])
    return columns + (["converted_from"] if patches.kind != "hdf5" else [])


def _row(patches: UserPatches, i: int, probs: dict, cuts: dict, fmt: str,
         converted: str | None) -> list[str]:
    if fmt == "kaggle":
        return [patches.patch_id(i), _number(probs["tta" if "tta" in probs else "single"][i])]
    row = [patches.patch_id(i), patches.source(i)]
    if patches.labels is not None:
        row.append(str(int(patches.labels[i])))
    for name in ("single", "tta"):
        if name in probs:
            row += [_number(probs[name][i]), str(int(probs[name][i] >= cuts[name]))]
    return row + ([converted or ""] if patches.kind != "hdf5" else [])


def _number(p: np.float32) -> str:
    """The shortest text that reads back as the same float32 ("0.73105854", "3.1e-05")."""
    return str(np.float32(p))


def _run(fn, images: np.ndarray) -> np.ndarray:
    return np.asarray(fn(images), dtype=np.float32).reshape(-1)


def _threshold(record: dict) -> dict:
    threshold = record.get("threshold")
    if not threshold:
        raise PCamError(f"run {record['run']} has no threshold yet (its valid split was never "
                        "scored), so patches cannot be labelled; score it first: python -m pcam "
                        f"evaluate --run {record['run']}")
    return threshold


def _out_path(out: str | os.PathLike | None) -> Path:
    """The CSV to write, checked before any work: a file name in an existing folder that
    is new, or an earlier output of `pcam predict` (its header says so).

    Any other existing file (a run's record.json or model, a meta CSV beside the
    data) is refused: a mistyped --out must not destroy it.
    """
    if out is not None and str(out) == "-":
        raise PCamError("--out -: predict writes a file, not standard output; give a file name, "
                        f"e.g. {DEFAULT_OUT}")
    text = str(out if out is not None else DEFAULT_OUT)
    path = Path(text).expanduser()
    if what := not_a_file(path):
        raise PCamError(f"--out {shown(path)} is {what}; give a file name, e.g. "
                        f"{shown(path / DEFAULT_OUT) if what == 'a folder' else DEFAULT_OUT}")
    if text.endswith(("/", os.sep)):
        raise PCamError(f"--out {text} names a folder, which does not exist; give a file name, "
                        f"e.g. {text}{DEFAULT_OUT} (after creating the folder)")
    if not path.parent.is_dir():
        raise PCamError(f"--out {shown(path)}: the folder {shown(path.parent)} does not exist; "
                        "create it or give another --out")
    if not os.access(path.parent, os.W_OK):
        raise PCamError(f"--out {shown(path)}: the folder {shown(path.parent)} is not writable; "
                        "give --out a file in a folder you can write to")
    if path.suffix.lower() in IMAGE_SUFFIXES + HDF5_SUFFIXES:  # an INPUT file, mistyped
        raise PCamError(f"--out {shown(path)} is named like an image or HDF5 file, which the CSV "
                        "would replace; give a .csv file name")
    if path.exists() and not _earlier_output(path):
        raise PCamError(f"--out {shown(path)} exists and is not a CSV that pcam predict wrote "
                        "(its first line is not predict's header), so it is left as it is; give "
                        "another --out, or move that file away first")
    return path


def _earlier_output(path: Path) -> bool:
    """Whether `path` starts with one of predict's headers (`id,source,...` or `id,label`)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            first = file.readline(4096).rstrip("\r\n")
    except OSError:
        return False
    return first.startswith("id,source,") or first == "id,label"
