"""A tiny real sweep, and the report's arithmetic on known inputs."""
import csv
import json
import shutil
from pathlib import Path

import pytest

import benchmark
import sweep
from conftest import stopped_after


def test_remaining_error_reduction_and_parameter_reduction():
    assert benchmark.remaining_error_reduction(90.0, 92.0) == pytest.approx(20.0)  # the hackathon's example
    assert benchmark.remaining_error_reduction(90.0, 88.0) == pytest.approx(-20.0)  # worse is negative
    assert benchmark.parameter_reduction(25_000, 100_000) == pytest.approx(75.0)


def record(width, method, seed, acc, params):
    return {"width": width, "method": method, "seed": seed, "test_acc": acc, "params": params,
            "dendrite_sets": 1 if method == "dendritic" else 0, "epochs": 10, "wall_seconds": 1.0}


def stored_run(width, method, seed, acc, params, **sweep_settings):
    """A record as the sweeps before the Optuna storage wrote it to runs.json."""
    return dict(record(width, method, seed, acc, params), dataset="digits", val_acc=acc + 1, best_epoch=8,
                min_epochs=10 if method == "plain" else 1, run=f"runs/digits/{method}{seed}",
                settings={"patience": 5, "max_dendrites": 3, "batch_size": 64, "lr": 0.001, "epochs": 200},
                sweep={"patience": 5, "max_dendrites": 3, "epochs": 200, "quick": False, **sweep_settings})


def test_summary_and_the_smallest_matching_dendritic_model():
    records = [record(1.0, "plain", 1, 90.0, 1000), record(1.0, "plain", 2, 92.0, 1000),
               record(0.5, "plain", 1, 85.0, 300), record(0.5, "plain", 2, 86.0, 300),
               record(0.5, "dendritic", 1, 90.0, 600), record(0.5, "dendritic", 2, 90.0, 600),
               record(0.25, "dendritic", 1, 80.0, 200), record(0.25, "dendritic", 2, 80.0, 200),
               record(1.0, "dendritic", 1, 93.0, 2000), record(1.0, "dendritic", 2, 93.0, 2000)]
    rows = benchmark.summarise(records)
    assert rows[(1.0, "plain")]["test_acc"] == pytest.approx((91.0, 2 ** 0.5))
    summary = benchmark.compression(rows)
    assert summary["best_plain_width"] == 1.0
    assert summary["target_acc"] == pytest.approx(91.0 - 2 ** 0.5)
    assert summary["smallest_matching_dendritic_width"] == 0.5  # 600 params, 90.0 >= 89.59
    assert summary["smallest_matching_plain_width"] == 1.0       # no narrower plain model gets there


def test_a_sweeps_threads_reach_its_runs(tmp_path):
    """The tests train on one thread (conftest): a sweep's --threads 2 must show in its run."""
    import torch

    args = benchmark.get_args_parser().parse_args(["--quick", "--threads", "2"])
    try:
        record = benchmark.run_cell(args, {"width": 0.0625, "method": "plain", "seed": 1, "min_epochs": 1},
                                    tmp_path / "run")
    finally:
        torch.set_num_threads(1)
    assert record["settings"]["threads"] == 2


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
    assert sum(line.startswith("| 0.25 |") or line.startswith("| 0.125 |") for line in table.splitlines()) == 2
    assert "parameter reduction %" in table
    assert (out / "neuroshrink.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run was trained again")
    monkeypatch.setattr(benchmark.train_phase2, "main", no_training)
    shutil.copytree(tiny_sweep["tmp"] / "results", tmp_path / "results")
    benchmark.main(benchmark.get_args_parser().parse_args(
        ["--widths", "0.25", "0.125", "--seeds", "1", "--quick", "--results", str(tmp_path / "results")]))
    reuse_output = capsys.readouterr().out
    assert "4 runs: 4 stored, 0 to train" in reuse_output
    assert "to retrain, pass new --results and --runs folders" in reuse_output
    assert (tmp_path / "results" / "digits" / "results.md").read_text() == table


def test_runs_json_moves_into_the_storage_and_reports_the_same_tables(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results" / "digits"
    out.mkdir(parents=True)
    old = [stored_run(0.5, "dendritic", 1, 90.0, 600), stored_run(0.5, "plain", 1, 88.0, 300),
           stored_run(1.0, "dendritic", 1, 93.0, 2000), stored_run(1.0, "plain", 1, 91.0, 1000)]
    (out / "runs.json").write_text(json.dumps(old))
    monkeypatch.setattr(benchmark.train_phase2, "main", None)  # nothing may train
    argv = ["--widths", "1", "0.5", "--seeds", "1", "--results", str(tmp_path / "results")]
    benchmark.main(benchmark.get_args_parser().parse_args(argv))
    assert "imported 4 records" in capsys.readouterr().out

    study = sweep.open_study(f"sqlite:///{out / 'sweep.db'}", "neuroshrink-digits")
    assert sweep.records(study) == old
    sources = {t.user_attrs["imported_from"].split(" at git ")[0] for t in study.get_trials()}
    assert [Path(source).resolve() for source in sources] == [out / "runs.json"]  # where each record came from
    expected = benchmark.tables("digits", benchmark.summarise(old), "")
    assert (out / "results.md").read_text().split("\n", 4)[4] == expected.split("\n", 4)[4]  # past the settings line
    benchmark.main(benchmark.get_args_parser().parse_args(argv))  # moved once, not twice
    assert len(sweep.records(study)) == 4


def test_stored_runs_with_other_settings_are_refused(tmp_path):
    out = tmp_path / "results" / "digits"
    out.mkdir(parents=True)
    (out / "runs.json").write_text(json.dumps([stored_run(0.5, "plain", 1, 90.0, 300)]))
    argv = ["--patience", "3", "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    with pytest.raises(SystemExit, match="--patience 5, not 3"):
        benchmark.main(benchmark.get_args_parser().parse_args(argv))


def test_a_run_folder_of_other_settings_is_replaced_and_one_of_the_same_recorded(tmp_path, monkeypatch, capsys):
    """A sweep's run folder may hold a stopped run of other settings: the trial of the same
    name of a study since deleted. It is trained anew, not continued (a stopped run of the
    same settings is continued: test_sweep); a finished run of the same settings is recorded."""
    args = benchmark.get_args_parser().parse_args(["--quick", "--epochs", "4"])
    cell, folder = {"width": 0.25, "method": "plain", "seed": 1, "min_epochs": 4}, tmp_path / "trial0"
    with stopped_after(monkeypatch, 2):
        benchmark.run_cell(args, cell, folder, ["--lr", "0.01"])
    record = benchmark.run_cell(args, cell, folder)
    assert "holds a run of other settings" in capsys.readouterr().out
    run = json.loads((folder / "results.json").read_text())
    assert run["settings"]["lr"] == 1e-3 and [row["epoch"] for row in run["history"]] == [1, 2, 3, 4]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run of the same settings was trained again")
    monkeypatch.setattr(benchmark.train_phase2, "main", no_training)
    assert benchmark.run_cell(args, cell, folder) == json.loads(json.dumps(record))  # as the storage holds it


def test_a_sweeps_dendritic_runs_draw_the_graph_at_the_end_only(tiny_sweep):
    dendritic = [r for r in tiny_sweep["records"] if r["method"] == "dendritic"]
    assert dendritic
    for record in dendritic:
        result = json.loads((Path(record["run"]) / "results.json").read_text())
        assert result["restructures"] and not any(row["graph_drawn"] for row in result["history"])
        assert (Path(record["run"]).parent / result["final"]["graph"]).is_file()  # drawn once, at the end
