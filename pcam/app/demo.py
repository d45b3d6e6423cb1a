"""README command 1: synthetic data, both notebooks, figures and a results table."""

from pathlib import Path

from pcam.core.errors import PCamError
from pcam.core.fileio import write_text
from pcam.core.paths import DEMO_WEIGHTS, PROJ_ROOT, results_dir, terminal_path
from pcam.data.spec import DATASET_INFO
from pcam.run.runlock import LOCK, claim_folder, refuse_if_locked, release_lock, remove_claimed

_TABLE = "# Demo results\n\n<!-- results:start -->\n<!-- results:end -->\n"


def run_demo(data_dir: str | Path | None = None, out_dir: str | Path | None = None,
             weights: str | None = None, fresh: bool = False) -> Path:
    """Make synthetic PCam (once), run both notebooks on it, then build a report.

    A rerun keeps the demo runs that are complete and resumes interrupted ones;
    `fresh` replaces them.

    Args:
        data_dir: folder for the synthetic files, made when it holds none;
            default `data/synthetic` in the project.
        out_dir: executed notebooks, run records, `RESULTS.md` and `images/`;
            default `demo/` in the results folder (`$PCAM_RESULTS_DIR` or `results/`).
        weights: the MobileNet run's `weights`: None (the ImageNet weights that
            ship in `pcam/assets/`, so the demo runs offline), "imagenet"
            (Keras' download), "none" or a weights file.
        fresh: delete the demo's earlier run folders first (never one that a
            live process has locked, or one that holds files but no run record).

    Returns:
        The demo's `RESULTS.md`.

    Raises:
        PCamError: before anything is written, when a demo run folder is locked
            by a live process (or, with `fresh`, holds no run record).
    """
    from pcam.data.synthetic import write_synthetic
    from pcam.execute.notebooks import run_notebooks
    from pcam.models import check_weights
    from pcam.report.build import build_report
    from pcam.run.config import TrainConfig

    # Defaults from the project root, like every other command's, not the current folder.
    data_dir = Path(data_dir) if data_dir is not None else PROJ_ROOT / "data" / "synthetic"
    out_dir = Path(out_dir) if out_dir is not None else results_dir() / "demo"
    weights = str(DEMO_WEIGHTS) if weights is None else weights
    mobilenet = TrainConfig.for_model("mobilenet", "demo", weights=weights)
    check_weights("mobilenet", mobilenet.alpha, mobilenet.weights)  # fail before any work
    runs = [out_dir / TrainConfig.for_model(model, "demo").run for model in ("mobilenet",
                                                                            "resnet50")]
    for folder in runs:  # refusals first: nothing is written before them
        refuse_if_locked(folder)
    for path, option in ((out_dir, "--out"), (data_dir, "--data-dir")):
        blocker = next((p for p in (path, *path.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise PCamError(f"{blocker} is a file, not a folder: give {option} a folder (it is "
                            "created if missing); nothing was written")
    from pcam.data.h5read import available_splits

    has_data = (data_dir / DATASET_INFO).exists()
    # split files only (a hidden temporary file an interrupted write left is not data);
    # write_synthetic refuses files that pcam did not write
    if not has_data and data_dir.is_dir() and available_splits(data_dir):
        raise PCamError(f"{terminal_path(data_dir)} holds PCam split files that are not "
                        "synthetic; give the demo another --data-dir")
    if fresh:
        _remove_runs(runs)
    if not has_data:
        print(f"writing synthetic PCam to {terminal_path(data_dir)}", flush=True)
        write_synthetic(data_dir, seed=0)  # the generator's default sizes
    notebooks = run_notebooks("demo", results=out_dir, skip_complete=True,
                              overrides={"data_dir": str(data_dir), "weights": weights})
    table = out_dir / "RESULTS.md"
    if not table.exists():
        write_text(table, _TABLE)
    build_report(results=out_dir, readme=table, images=out_dir / "images", published_only=False)
    print("\nDone. Look at:")
    for path in notebooks:
        print(f"  {terminal_path(path)}   (executed notebook)")
    print(f"  {terminal_path(table)}   (results table)\n  {terminal_path(out_dir / 'images')}/   "
          "(figures)")
    return table


def _remove_runs(folders: list[Path]) -> None:
    """Delete the demo's earlier run folders, each under its lock; all checked first.

    Raises:
        PCamError: one is locked by a live process, or holds files but no run
            record (not a run: the demo did not write it); nothing is removed then.
    """
    claimed = []
    try:
        for folder in folders:
            if not folder.exists():
                continue
            claimed.append((folder, claim_folder(folder, "replaced")[0]))
            if (not (folder / "record.json").is_file()
                    and any(p.name != LOCK for p in folder.iterdir())):
                raise PCamError(f"{terminal_path(folder)} holds files but no run record, so the "
                                "demo did not write it; move them away, or give the demo "
                                "another --out")
        for folder, lock in claimed:
            print(f"removing the earlier demo run {terminal_path(folder)} (--fresh)", flush=True)
            remove_claimed(folder, lock)
    finally:
        for _, lock in claimed:
            release_lock(lock)
