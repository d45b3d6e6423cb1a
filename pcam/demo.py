"""README command 1: synthetic data, both notebooks, figures and a results table."""

import shutil
from pathlib import Path

from pcam.data.spec import DATASET_INFO
from pcam.errors import PCamError
from pcam.paths import display_path

_TABLE = "# Demo results\n\n<!-- results:start -->\n<!-- results:end -->\n"


def _fetch_imagenet_weights(alpha: float) -> None:
    """Download (or find in Keras' cache) the ImageNet weights before any notebook runs.

    Offline this raises the `PCamError` that names `--weights PATH` at once,
    instead of a failed notebook cell minutes later.
    """
    from pcam.models import build_model

    build_model("mobilenet", alpha=alpha, weights="imagenet")


def run_demo(data_dir: str | Path = "data/synthetic", out_dir: str | Path = "results/demo",
             weights: str = "imagenet") -> Path:
    """Make synthetic PCam (once), run both notebooks on it, then build a report.

    Args:
        data_dir: folder for the synthetic files; made when it holds none.
        out_dir: executed notebooks, run records, `RESULTS.md` and `images/`.
        weights: the MobileNet notebook's `WEIGHTS`: "imagenet", "none" or a file.

    Returns:
        The demo's `RESULTS.md`.
    """
    from pcam.data.synthetic import write_synthetic
    from pcam.models import check_model_args
    from pcam.notebooks import PRESETS, run_notebooks
    from pcam.report.build import build_report

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    alpha = PRESETS["demo"]["mobilenet"]["ALPHA"]
    check_model_args("mobilenet", alpha=alpha, weights=None if weights == "none" else weights)
    if weights == "imagenet":
        _fetch_imagenet_weights(alpha)
    if not (data_dir / DATASET_INFO).exists():
        if any(data_dir.glob("*.h5")):
            raise PCamError(f"{display_path(data_dir)} holds .h5 files that are not synthetic; "
                            "give the demo another --data-dir")
        print(f"writing synthetic PCam to {display_path(data_dir)}", flush=True)
        write_synthetic(data_dir, seed=0)  # the generator's default sizes
    for preset in PRESETS["demo"].values():  # a rerun starts afresh: demo runs are scratch
        if "RUN" in preset:
            shutil.rmtree(out_dir / preset["RUN"], ignore_errors=True)
    notebooks = run_notebooks("demo", out_dir=out_dir,
                              overrides={"DATA_DIR": str(data_dir), "WEIGHTS": weights})
    table = out_dir / "RESULTS.md"
    if not table.exists():
        table.write_text(_TABLE)
    build_report(results=out_dir, readme=table, images=out_dir / "images", published_only=False)
    print("\nDone. Look at:")
    for path in notebooks:
        print(f"  {display_path(path)}   (executed notebook)")
    print(f"  {display_path(table)}   (results table)\n  {display_path(out_dir / 'images')}/   "
          "(figures)")
    return table
