"""Shared fixtures: tiny PCam-layout data made on the fly, and ../shared when present.

Every `record.json` a test session writes under pytest's temporary folders is
checked against `pcam/core/record.schema.json` when the session ends (see
`_every_written_record_is_valid`); a test that writes a bad record on purpose
says so with `invalid_record_ok`.
"""

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# Precision choices ("auto") are cached per test session, never in the user's cache.
os.environ["PCAM_CACHE_DIR"] = tempfile.mkdtemp(prefix="pcam-test-cache-")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# Hypothesis profiles: "full" (the default, `make test`) keeps every property test's own
# example count, "quick" (`make test-fast`: --hypothesis-profile=quick) a tenth of it
# (`examples()` in test_settings.py scales by max_examples / 100).
settings.register_profile("full", max_examples=100)
settings.register_profile("quick", max_examples=10)
settings.load_profile("full")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the repository; the test is skipped when it is absent."""
    if not (SHARED / "PCAM.md").exists():
        pytest.skip("../shared is absent (a fresh clone has no shared data)")
    return SHARED


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A synthetic PCam folder (train 512, valid 256, test 256, seed 0), written once."""
    from pcam.data.synthetic import write_synthetic

    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic(folder, sizes={"train": 512, "valid": 256, "test": 256}, seed=0)
    return folder


@pytest.fixture(scope="session")
def shared_dir_or_none() -> Path | None:
    """`../shared` when present, else None (for tests that run either way)."""
    return SHARED if (SHARED / "PCAM.md").exists() else None


_INVALID_ON_PURPOSE: set[Path] = set()


@pytest.fixture
def invalid_record_ok():
    """Call it with a `record.json` path a test makes invalid on purpose.

    The end-of-session check then skips that file (and only that file).
    """
    return lambda path: _INVALID_ON_PURPOSE.add(Path(path).resolve())


@pytest.fixture(scope="session", autouse=True)
def _every_written_record_is_valid(tmp_path_factory):
    """At the end of the session, validate every record.json under the temp folders.

    Each pytest-xdist worker has its own base temp folder and runs this for it;
    a bad record fails the session as an error at teardown of its last test.
    """
    yield
    from pcam.core.errors import PCamError
    from pcam.run.records import load_record_file

    problems = []
    for path in sorted(tmp_path_factory.getbasetemp().rglob("record.json")):
        if path.resolve() in _INVALID_ON_PURPOSE:
            continue
        try:
            load_record_file(path)
        except PCamError as error:
            problems.append(f"- {error}")
    if problems:
        pytest.fail(f"{len(problems)} record.json written by this test session do not match "
                    "pcam/core/record.schema.json:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def figures_stubbed(monkeypatch):
    """For report tests about text, links, notes and refusals: every figure the report
    draws from records is written as a small placeholder PNG instead of being drawn
    (drawing is most of a report's time; tests/test_plots.py and the report tests that
    look at figures draw them). Grad-CAM and model diagrams are drawn as usual.
    Returns the list of files written, in order; each placeholder differs from the last."""
    from PIL import Image

    from pcam import plots
    from pcam.plots import curves, study

    written = []

    def placeholder(*args, **kwargs):
        path = kwargs.get("path", args[-1] if args else None)
        if path is not None:  # each drawing differs, so a test sees whether one was redone
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), len(written) % 256).save(path)
            written.append(Path(path))

    for module, names in ((plots, ("plot_training_curves", "plot_compared_curves",
                                   "plot_roc_pr", "plot_reliability", "plot_confusion",
                                   "plot_sample_grid", "plot_augmentations")),
                          (curves, ("plot_curves",)), (study, ("plot_study",))):
        for name in names:
            monkeypatch.setattr(module, name, placeholder)
    return written
