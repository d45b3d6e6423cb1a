"""Evaluate a run: predict each split once, in file order, and score it.

The threshold is always chosen on valid and applied unchanged to the other
splits; test-time augmentation (TTA) averages the probabilities of the 8
dihedral transforms of each patch. Predictions go to `predictions/<split>.npz`
(y_true uint8, y_prob float32, y_prob_tta float32 when TTA ran, slides when the
data have a meta file). Bootstrap intervals resample slides when slide ids are
known, patches otherwise; each split's scores say which (`bootstrap_unit`).

Only the run's own data (its recorded folder, or one whose files match the
record's data fingerprint) replace its metrics. Other data are scored with the
run's threshold into `external[<data key>][split]`, predictions in
`predictions/<data key>/<split>.npz`, and never touch metrics or threshold.
"""

import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np

from pcam.core import paths
from pcam.core.errors import PCamError
from pcam.evaluation.metrics import THRESHOLD_RULE, choose_threshold, evaluate_predictions
from pcam.evaluation.predict import Predictor, predict_split
from pcam.evaluation.predictions import save_predictions
from pcam.models import float32_copy, load_checkpoint
from pcam.run import records
from pcam.run.records import read_record, run_path
from pcam.run.runlock import acquire_lock, release_lock

TRAIN_EVAL_CAP = 8192  # patches of train scored after training (a fit check, not a result)


def evaluate_after_training(folder: Path, record: dict, splits: dict) -> dict:
    """Score the best checkpoint of a just-trained run on its splits; the record.

    Raises:
        PCamError: the data changed while the run trained (another command
            rewrote the folder): scores would belong to other patches than the
            record names. The run stays as it is; `pcam evaluate` scores it once
            the data are the run's again.
    """
    from pcam.data.describe import fingerprint, fingerprint_changes

    recorded = (record.get("data") or {}).get("fingerprint")
    if recorded:
        changed, _ = fingerprint_changes({k: v for k, v in recorded.items() if k in splits},
                                         fingerprint(splits))
        if changed:
            raise PCamError(f"the data of run {record['run']} changed while it trained "
                            f"({'; '.join(changed)}), so its scores would be on other patches "
                            "than its record names; restore the data, then run "
                            f"`python -m pcam evaluate --run {record['run']}`")
    config = record["config"]
    caps = {"train": min(config["max_samples"] or TRAIN_EVAL_CAP, TRAIN_EVAL_CAP)}
    caps.update({name: config["max_eval_samples"] for name in ("valid", "test")})
    record = _evaluate(folder, record, splits, caps, tta=config["tta"], data_dir=None)
    records.mark_complete(record)
    records.write_record(folder, record)
    return record


def evaluate_run(run, *, data_dir=None, splits=("valid", "test"), tta: bool = True) -> dict:
    """Evaluate a run's best checkpoint on a PCam-layout folder; update its record.

    Args:
        run: run name or folder ("results/NAME").
        data_dir: data folder; default the run's own (its recorded folder, or
            `$PCAM_DATA_DIR` / `data/` when their files match the record's data
            fingerprint). Another folder's scores go to `external` (see module).
        splits: splits to score; valid (when listed, on the run's own data)
            sets a new threshold, otherwise the record's threshold is applied.
        tta: also score 8-fold dihedral test-time augmentation. Without it, a
            split that has TTA scores keeps its saved TTA predictions (so the
            TTA threshold and scores stay), when the saved single-pass
            predictions are this checkpoint's on the same patches; else refused.

    Returns:
        The updated record; each scored split notes its data folder. Its
        status is left as it was: scoring does not finish an interrupted run.

    Raises:
        PCamError: `run` names no run folder (no record.json there), the run's
            own data cannot be found (give --data-dir), the run is being trained
            or evaluated by another process, no usable checkpoint, no threshold
            to apply, or TTA scores that cannot be kept (see `tta`). Nothing is
            written before every split is predicted.
    """
    from pcam.data.h5read import open_split

    folder = run_path(run)
    if not (folder / records.RECORD).is_file():  # no lock file dropped into a stray folder
        raise PCamError(f"no run record at {folder / records.RECORD}; give --run a run name "
                        f"(a folder of {paths.results_dir()}) or a run folder with a record")
    lock = acquire_lock(folder, "evaluated")  # before the record is read
    try:
        record = read_record(folder)
        own = data_dir is None or _is_own_data(record, Path(data_dir))
        data_dir = own_data_dir(record) if data_dir is None else Path(data_dir)
        opened = {name: open_split(data_dir, name) for name in splits}
        if not own:
            return _evaluate_external(folder, record, opened, data_dir, tta=tta)
        before = {s: record["metrics"].get(s) for s in splits}, record.get("threshold")
        record = _evaluate(folder, record, opened, dict.fromkeys(opened), tta=tta,
                           data_dir=data_dir, keep_tta=True)
    finally:
        release_lock(lock)
    replaced = [s for s in splits if before[0][s] is not None]
    if replaced:
        print(f"evaluate: replaced run {record['run']}'s {', '.join(replaced)} metrics and "
              "predictions (scored again on its own data)")
    old, new = (before[1] or {}).get("value"), record["threshold"]["value"]
    if old is not None and old != new:
        print(f"evaluate: threshold {old:.4f} -> {new:.4f} (chosen on valid again); every "
              "scored split uses it")
    return record


def own_data_dir(record: dict) -> Path:
    """The run's own data folder, found from its record; `PCamError` saying --data-dir."""
    stored = record["data"]["dir"]
    # Records written before links were kept name a linked folder `<external>/data/x`:
    # the same place under this project is tried too (its fingerprint must match).
    tail = stored.removeprefix("<external>/") if stored.startswith("<external>/") else None
    for folder in (paths.from_display_path(stored), tail and paths.PROJ_ROOT / tail,
                   paths.data_dir()):
        if folder is not None and folder.is_dir() and _is_own_data(record, folder):
            return folder
    where = ("is outside the project, so its record cannot locate it" if
             stored.startswith("<external>") else "no longer holds the data it trained on")
    raise PCamError(
        f"run {record['run']} trained on {stored}, which {where}, and "
        f"{paths.data_dir()} ($PCAM_DATA_DIR, else data/) does not hold "
        "the same data either; give the run's data folder with --data-dir (scores on another "
        "folder are kept apart, under \"external\" in its record)")


def _is_own_data(record: dict, data_dir: Path) -> bool:
    """Whether `data_dir` holds the data the run trained on (fingerprint, else path)."""
    from pcam.data.describe import fingerprint, fingerprint_changes

    recorded = record["data"].get("fingerprint")
    if recorded is None:  # an older record: only its folder name can tell
        return paths.display_path(data_dir) == record["data"]["dir"]
    present = _openable(data_dir, recorded)
    if not present:
        return False
    changed, _ = fingerprint_changes({s: recorded[s] for s in present}, fingerprint(present))
    return not changed


def _openable(data_dir: Path, names) -> dict:
    from pcam.data.h5read import available_splits, open_split

    found = {}
    for name in available_splits(data_dir):
        if name in names:
            try:
                found[name] = open_split(data_dir, name)
            except PCamError:
                continue
    return found


def _evaluate_external(folder: Path, record: dict, splits: dict, data_dir: Path, *,
                       tta: bool) -> dict:
    """Score other data with the run's own threshold into `external[key]`; the record."""
    from pcam.core.environment import hardware_info
    from pcam.data.describe import fingerprint
    from pcam.data.h5read import read_dataset_info
    from pcam.data.spec import SPLITS

    threshold = record.get("threshold")
    if not threshold:
        raise PCamError(
            f"run {record['run']} has no threshold yet (its own valid split was never "
            f"scored); score it on its own data first (python -m pcam evaluate --run "
            f"{record['run']}), then on other data")
    prints = fingerprint(_openable(data_dir, SPLITS))
    content = {s: {k: {f: v for f, v in e.items() if f != "mtime_ns"} for k, e in fp.items()}
               for s, fp in prints.items()}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9._-]+", "-", data_dir.resolve().name.lower()).strip("-._")[:60]
    key = f"{slug or 'data'}-{digest}"
    model = Predictor(_load_best(folder, record))
    info = read_dataset_info(data_dir)
    earlier = (record.get("external") or {}).get(key, {})
    replaced = sorted(set(splits) & set(earlier))
    preds = {}
    for name, split in splits.items():  # every split predicted before anything is written
        pred = predict_split(model, split, tta=tta and name != "train")
        preds[name] = _with_kept_tta(folder, record["run"], name, earlier.get(name), pred)
    (folder / "predictions" / key).mkdir(parents=True, exist_ok=True)
    for name, pred in preds.items():
        entry = {**_score(pred, threshold), "inference": pred["inference"],
                 "data_dir": paths.display_path(data_dir),
                 "data_label": info.get("label") or info.get("source"),
                 "hardware": hardware_info(), "threshold": threshold["value"],
                 "predictions": save_predictions(folder, f"{key}/{name}", pred),
                 "at": records.utc_now()}
        records.set_external_metrics(record, key, name, entry)
    records.write_record(folder, record)
    print(f"evaluate: run {record['run']} scored on other data ({data_dir})"
          f" under external[{key!r}]: {', '.join(splits)}"
          + (f" (replacing the earlier {', '.join(replaced)})" if replaced else "")
          + "; its own metrics and threshold are unchanged")
    return record


def _load_best(folder: Path, record: dict):
    """The best checkpoint, computing in float32 whatever precision it trained in."""
    best = folder / record["checkpoints"]["best"]
    return float32_copy(load_checkpoint(best, advice=(
        "the run has no usable best checkpoint: restore that file, or train the run again "
        "(another --run name)")))[0]


def _evaluate(folder: Path, record: dict, splits: dict, caps: dict, *, tta: bool,
              data_dir, keep_tta: bool = False) -> dict:
    from pcam.core.environment import hardware_info
    from pcam.data.h5read import read_dataset_info

    order = sorted(splits, key=lambda s: s != "valid")  # valid first: it sets the threshold
    if "valid" not in splits and not record.get("threshold"):
        raise PCamError(f"no valid threshold in {folder / 'record.json'}; "
                        f"evaluate with --split valid {' '.join(order)}")
    model = Predictor(_load_best(folder, record))
    start = time.perf_counter()
    preds = {}
    for name in order:  # every split predicted (and checked) before anything is written
        pred = predict_split(model, splits[name], max_samples=caps.get(name),
                             tta=tta and name != "train")
        if keep_tta:
            pred = _with_kept_tta(folder, record["run"], name, record["metrics"].get(name), pred)
        preds[name] = pred
    saved = {}  # a new threshold re-scores the other splits' saved predictions
    for name in sorted(set(record["predictions"]) - set(splits)) if "valid" in splits else ():
        with np.load(folder / record["predictions"][name]) as arrays:
            saved[name] = {key: arrays[key] for key in arrays.files}
    for name, pred in preds.items():
        if name == "valid":
            tta_value = (choose_threshold(pred["y_true"], pred["y_prob_tta"])
                         if "y_prob_tta" in pred else None)
            records.set_threshold(record, choose_threshold(pred["y_true"], pred["y_prob"]),
                                  tta_value, rule=THRESHOLD_RULE)
        entry = {**_score(pred, record["threshold"]), "inference": pred["inference"]}
        if data_dir is not None:  # scored outside training: say on what data and hardware
            info = read_dataset_info(data_dir)
            entry.update(data_dir=paths.display_path(data_dir),
                         data_label=info.get("label") or info.get("source"),
                         hardware=hardware_info())
        records.set_split_metrics(record, name, entry, save_predictions(folder, name, pred))
    # A new threshold: score the other splits' saved predictions again with it,
    # so every column of the record uses the same threshold.
    for name, pred in saved.items():
        scores = _score(pred, record["threshold"])
        records.set_split_metrics(record, name, {**record["metrics"][name], **scores},
                                  record["predictions"][name])
    records.set_evaluate_seconds(record, time.perf_counter() - start)
    records.write_record(folder, record)
    return record


def _with_kept_tta(folder: Path, run: str, name: str, earlier: dict | None, pred: dict) -> dict:
    """`pred` with the saved TTA probabilities of `earlier` scores, when this pass ran no TTA.

    A partial evaluate keeps what it does not compute again: the saved TTA
    predictions stay (and so the TTA threshold and scores) when the saved
    single-pass ones are this checkpoint's on the same patches.

    Raises:
        PCamError: they are not (another checkpoint, other patches, a damaged file).
    """
    if "y_prob_tta" in pred or not (earlier or {}).get("tta"):
        return pred
    path = folder / str(earlier.get("predictions") or f"predictions/{name}.npz")
    try:
        with np.load(path) as saved:
            old = {key: saved[key] for key in saved.files}
        same = ("y_prob_tta" in old and old["y_true"].shape == pred["y_true"].shape
                and np.array_equal(old["y_true"], pred["y_true"])
                and np.allclose(old["y_prob"], pred["y_prob"], atol=1e-4))
    except Exception:  # missing, truncated or not an npz: nothing to keep
        same = False
    if not same:
        raise PCamError(
            f"run {run}: {paths.terminal_path(path)} does not hold this checkpoint's "
            f"predictions of the same {name} patches, so its TTA scores cannot be kept "
            f"without TTA; evaluate {name} with TTA (drop --no-tta) to score both again")
    print(f"evaluate: {name}: TTA not run again (--no-tta); its saved TTA predictions are kept",
          flush=True)
    kept = {k: v for k, v in earlier.get("inference", {}).items() if k.startswith("tta_")}
    return {**pred, "y_prob_tta": old["y_prob_tta"], "inference": {**pred["inference"], **kept}}


def _score(pred: dict, threshold: dict) -> dict:
    """Whole-split metrics of single-pass (and TTA) predictions at the valid thresholds.

    The bootstrap resamples `pred["slides"]` (a cluster bootstrap) when present.
    """
    slides = pred.get("slides")
    scores = {"single": evaluate_predictions(pred["y_true"], pred["y_prob"], threshold["value"],
                                             slides=slides)}
    if "y_prob_tta" in pred:
        tta = evaluate_predictions(pred["y_true"], pred["y_prob_tta"],
                                   threshold.get("tta_value", threshold["value"]), slides=slides)
        if "tta_value" not in threshold:
            tta["notes"] = [*tta.get("notes", []), "threshold of the single pass: valid was "
                            "scored without TTA"]
        scores["tta"] = tta
    return scores


