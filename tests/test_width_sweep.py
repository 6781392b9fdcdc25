"""experiments/width_sweep.py: a tiny real sweep, and the report's arithmetic on known inputs."""
import csv
import json
import shutil
from pathlib import Path

import pytest

import train_phase2
from experiments import width_sweep


def test_remaining_error_reduction_and_parameter_reduction():
    assert width_sweep.remaining_error_reduction(90.0, 92.0) == pytest.approx(20.0)  # the hackathon's example
    assert width_sweep.remaining_error_reduction(90.0, 88.0) == pytest.approx(-20.0)  # worse is negative
    assert width_sweep.parameter_reduction(25_000, 100_000) == pytest.approx(75.0)


def record(width, method, seed, acc, params):
    return {"width": width, "method": method, "seed": seed, "test_acc": acc, "params": params,
            "dendrite_sets": 1 if method == "dendritic" else 0, "epochs": 10, "wall_seconds": 1.0}


def test_summary_and_the_smallest_matching_dendritic_model():
    records = [record(1.0, "plain", 1, 90.0, 1000), record(1.0, "plain", 2, 92.0, 1000),
               record(0.5, "plain", 1, 85.0, 300), record(0.5, "plain", 2, 86.0, 300),
               record(0.5, "dendritic", 1, 90.0, 600), record(0.5, "dendritic", 2, 90.0, 600),
               record(0.25, "dendritic", 1, 80.0, 200), record(0.25, "dendritic", 2, 80.0, 200),
               record(1.0, "dendritic", 1, 93.0, 2000), record(1.0, "dendritic", 2, 93.0, 2000)]
    rows = width_sweep.summarise(records)
    assert rows[(1.0, "plain")]["test_acc"] == pytest.approx((91.0, 2 ** 0.5))
    summary = width_sweep.compression(rows)
    assert summary["best_plain_width"] == 1.0
    assert summary["target_acc"] == pytest.approx(91.0 - 2 ** 0.5)
    assert summary["smallest_matching_dendritic_width"] == 0.5  # 600 params, 90.0 >= 89.59
    assert summary["smallest_matching_plain_width"] == 1.0       # no narrower plain model gets there
    # a worker done while another still trains the plain runs reports what is there
    early = width_sweep.summarise([r for r in records if r["method"] == "dendritic"])
    assert width_sweep.compression(early) is None
    assert "No plain run is recorded yet" in width_sweep.tables("digits", early, "", [])


def test_tiny_sweep_reports_and_then_reuses_its_runs(tiny_sweep, tmp_path, monkeypatch, capsys):
    records, out = tiny_sweep["records"], tiny_sweep["results"]
    assert sorted((r["width"], r["method"]) for r in records) == [
        (0.125, "dendritic"), (0.125, "plain"), (0.25, "dendritic"), (0.25, "plain")]
    with open(out / "runs.csv") as f:  # the records, readable without the code
        assert [(float(r["width"]), r["method"], float(r["test_acc"])) for r in csv.DictReader(f)] == [
            (r["width"], r["method"], r["test_acc"]) for r in records]
    for width in (0.25, 0.125):
        plain, dendritic = (next(r for r in records if r["width"] == width and r["method"] == m)
                            for m in ("plain", "dendritic"))
        assert plain["epochs"] >= dendritic["epochs"] == plain["min_epochs"]  # equal or larger budget
    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| width"))
    assert header.count("|") == 12 and "RER %" in header and "dendrite sets kept" in header
    rows = [line for line in table.splitlines() if line.startswith(("| 0.25 |", "| 0.125 |"))]
    assert len([row for row in rows if row.count("|") == 12]) == 2  # one per width: plain and dendritic side by side
    deployment = [row for row in rows if row.split(" | ")[1] in ("plain", "dendritic")]
    assert len(deployment) == 4 and all(row.split(" | ")[2].replace(",", "").split(" ±")[0].isdigit()
                                        for row in deployment)  # every run's ONNX file measured: its bytes
    assert "parameter reduction %" in table
    assert (out / "neuroshrink.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run was trained again")
    monkeypatch.setattr(train_phase2, "run", no_training)
    shutil.copytree(tiny_sweep["tmp"] / "results", tmp_path / "results")
    width_sweep.main(width_sweep.get_args_parser().parse_args(
        ["--widths", "0.25", "0.125", "--seeds", "1", "--quick", "--results", str(tmp_path / "results")]))
    reuse_output = capsys.readouterr().out
    assert "4 runs: 4 stored, 0 to train" in reuse_output
    assert "to retrain, pass new --results and --runs folders" in reuse_output
    assert (tmp_path / "results" / "digits" / "results.md").read_text() == table


def test_report_only_rebuilds_tables_and_plot_from_the_storage(tmp_path, tiny_sweep):
    results = tmp_path / "results"
    shutil.copytree(tiny_sweep["tmp"] / "results", results)
    made = results / "digits"
    table = (made / "results.md").read_text()
    for name in ("results.md", "runs.csv", "neuroshrink.png"):
        (made / name).unlink()
    width_sweep.main(width_sweep.get_args_parser().parse_args(["--report-only", "--results", str(results)]))
    assert (made / "results.md").read_text() == table
    assert (made / "neuroshrink.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((made / "runs.csv").read_text().splitlines()) == 1 + 4


def test_a_sweeps_dendritic_runs_draw_the_graph_at_the_end_only(tiny_sweep):
    dendritic = [r for r in tiny_sweep["records"] if r["method"] == "dendritic"]
    assert dendritic
    for record in dendritic:
        result = json.loads((Path(record["run"]) / "results.json").read_text())
        assert result["restructures"] and not any(row["graph_drawn"] for row in result["history"])
        assert (Path(record["run"]).parent / result["final"]["graph"]).is_file()  # drawn once, at the end
