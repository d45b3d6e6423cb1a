"""The model card each published run gets from `pcam report` (results/<run>/MODEL_CARD.md)."""

import json
from pathlib import Path

import pytest
from fake_runs import make_run

from pcam.core.paths import PROJ_ROOT
from pcam.report.build import build_report
from pcam.report.cells import percent_cell
from pcam.report.inputs import load_records, published_records
from pcam.report.model_card import CARD, model_card
from pcam.report.table import END, START


def _card(run_dir: Path) -> tuple[str, dict]:
    record = json.loads((run_dir / "record.json").read_text())
    return model_card(record, run_dir), record


@pytest.mark.parametrize("model", ["mobilenet", "resnet50"])
def test_card_holds_the_records_numbers_its_use_and_its_limits(tmp_path, model):
    card, record = _card(make_run(tmp_path / "results", f"{model}-pub", model, slides=6))
    assert card.startswith(f"# Model card: {model}-pub\n")
    assert "**Not for diagnosis**" in card and "## Data and its limits" in card
    for split in ("valid", "test"):
        single = record["metrics"][split]["single"]
        assert f"{single['n']:,} {split}" in card
    test = record["metrics"]["test"]["single"]
    row = next(line for line in card.splitlines() if line.startswith("| ROC AUC |"))
    assert row.endswith(f"| {percent_cell(test['roc_auc'], test['ci']['roc_auc'])} |")
    row = next(line for line in card.splitlines() if line.startswith("| recall (sensitivity) |"))
    recall = percent_cell(test["at_chosen"]["recall"], test["ci"]["at_chosen.recall"])
    assert row.endswith(f"| {recall} |")
    threshold = record["threshold"]
    assert f"{threshold['value']:.3f}, chosen on the {threshold['split']} split" in card
    assert f"label = probability >= {threshold['value']:.3f}" in card
    assert "/tmp" not in card and str(tmp_path) not in card  # no machine paths
    assert ("ImageNet" in card) == (model == "mobilenet")


def test_card_of_a_run_without_metrics_says_how_to_get_them(tmp_path):
    run = make_run(tmp_path / "results", "bare", "mobilenet")
    record = json.loads((run / "record.json").read_text())
    card = model_card({**record, "metrics": {}, "threshold": None}, run)
    assert "No metrics recorded yet (`python -m pcam evaluate --run RUN`)" in card
    assert "None recorded yet" in card


def test_report_writes_a_card_for_each_published_run_only(tmp_path, figures_stubbed):
    results = tmp_path / "results"
    published = [make_run(results, f"{m}-pub", m, seed=i) for i, m in enumerate(
        ("mobilenet", "resnet50"))]
    other = make_run(results, "mobilenet-demo", "mobilenet", published=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\n{END}\n")
    build_report(results, readme, tmp_path / "images", gradcam=False)
    for run in published:
        record = json.loads((run / "record.json").read_text())
        assert (run / CARD).read_text() == model_card(record, run, results)
    assert not (other / CARD).exists()
    build_report(results, readme, tmp_path / "images", gradcam=False)  # idempotent
    assert all(f"`results/{run.name}/record.json`" in (run / CARD).read_text()
               for run in published)


def test_committed_published_runs_have_their_current_card():
    """The cards in the repository are what `pcam report` writes from the records."""
    rows = published_records(load_records(PROJ_ROOT / "results"))
    assert rows, "no published run committed"
    for run_dir, record in rows:
        card = model_card(record, run_dir, PROJ_ROOT / "results")
        assert (run_dir / CARD).read_text() == card, run_dir.name
