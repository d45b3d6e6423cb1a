"""README command 1: synthetic data, both notebooks, figures and a results table."""

import shutil
from pathlib import Path

from pcam.data.spec import DATASET_INFO
from pcam.errors import PCamError
from pcam.fileio import write_text
from pcam.paths import DEMO_WEIGHTS, display_path

_TABLE = "# Demo results\n\n<!-- results:start -->\n<!-- results:end -->\n"


def run_demo(data_dir: str | Path = "data/synthetic", out_dir: str | Path = "results/demo",
             weights: str | None = None) -> Path:
    """Make synthetic PCam (once), run both notebooks on it, then build a report.

    Args:
        data_dir: folder for the synthetic files; made when it holds none.
        out_dir: executed notebooks, run records, `RESULTS.md` and `images/`.
        weights: the MobileNet run's `weights`: None (the ImageNet weights that
            ship in `pcam/assets/`, so the demo runs offline), "imagenet"
            (Keras' download), "none" or a weights file.

    Returns:
        The demo's `RESULTS.md`.
    """
    from pcam.config import TrainConfig
    from pcam.data.synthetic import write_synthetic
    from pcam.models import check_weights
    from pcam.notebooks import run_notebooks
    from pcam.report.build import build_report

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    weights = str(DEMO_WEIGHTS) if weights is None else weights
    mobilenet = TrainConfig.for_model("mobilenet", "demo", weights=weights)
    check_weights("mobilenet", mobilenet.alpha, mobilenet.weights)  # fail before any work
    if not (data_dir / DATASET_INFO).exists():
        if any(data_dir.glob("*.h5")):
            raise PCamError(f"{display_path(data_dir)} holds .h5 files that are not synthetic; "
                            "give the demo another --data-dir")
        print(f"writing synthetic PCam to {display_path(data_dir)}", flush=True)
        write_synthetic(data_dir, seed=0)  # the generator's default sizes
    for model in ("mobilenet", "resnet50"):  # a rerun starts afresh: demo runs are scratch
        shutil.rmtree(out_dir / TrainConfig.for_model(model, "demo").run, ignore_errors=True)
    notebooks = run_notebooks("demo", results=out_dir,
                              overrides={"data_dir": str(data_dir), "weights": weights})
    table = out_dir / "RESULTS.md"
    if not table.exists():
        write_text(table, _TABLE)
    build_report(results=out_dir, readme=table, images=out_dir / "images", published_only=False)
    print("\nDone. Look at:")
    for path in notebooks:
        print(f"  {display_path(path)}   (executed notebook)")
    print(f"  {display_path(table)}   (results table)\n  {display_path(out_dir / 'images')}/   "
          "(figures)")
    return table
