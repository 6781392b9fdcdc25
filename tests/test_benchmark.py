"""A tiny real sweep, and the report's arithmetic on known inputs."""
import json

import pytest

import benchmark


def test_remaining_error_reduction_and_parameter_reduction():
    assert benchmark.remaining_error_reduction(90.0, 92.0) == pytest.approx(20.0)  # the hackathon's example
    assert benchmark.remaining_error_reduction(90.0, 88.0) == pytest.approx(-20.0)  # worse is negative
    assert benchmark.parameter_reduction(25_000, 100_000) == pytest.approx(75.0)


def record(width, method, seed, acc, params):
    return {"width": width, "method": method, "seed": seed, "test_acc": acc, "params": params,
            "dendrite_sets": 1 if method == "dendritic" else 0, "epochs": 10, "wall_seconds": 1.0}


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


def test_tiny_sweep_reports_and_then_reuses_its_runs(tmp_path, monkeypatch, capsys):
    argv = ["--widths", "0.25", "0.125", "--seeds", "1", "--quick",
            "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    rows = benchmark.main(benchmark.get_args_parser().parse_args(argv))
    out = tmp_path / "results" / "digits"
    records = json.loads((out / "runs.json").read_text())
    assert sorted((r["width"], r["method"]) for r in records) == [
        (0.125, "dendritic"), (0.125, "plain"), (0.25, "dendritic"), (0.25, "plain")]
    for width in (0.25, 0.125):
        plain, dendritic = (next(r for r in records if r["width"] == width and r["method"] == m)
                            for m in ("plain", "dendritic"))
        assert plain["epochs"] >= dendritic["epochs"] == plain["min_epochs"]  # equal or larger budget
        assert plain["params"] == rows[(width, "plain")]["params"][0]
    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| width"))
    assert header.count("|") == 12 and "RER %" in header and "dendrite sets kept" in header
    assert sum(line.startswith("| 0.25 |") or line.startswith("| 0.125 |") for line in table.splitlines()) == 2
    assert "parameter reduction %" in table
    assert (out / "neuroshrink.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run was trained again")
    monkeypatch.setattr(benchmark.train_phase2, "main", no_training)
    capsys.readouterr()
    benchmark.main(benchmark.get_args_parser().parse_args(argv))
    reuse_output = capsys.readouterr().out
    assert "4 runs: 4 stored, 0 to train" in reuse_output
    assert "to retrain, pass new --results and --runs folders" in reuse_output
    assert (out / "results.md").read_text() == table


def test_stored_runs_with_other_settings_are_refused(tmp_path):
    out = tmp_path / "results" / "digits"
    out.mkdir(parents=True)
    stored = dict(record(0.5, "plain", 1, 90.0, 300), sweep={
        "patience": 5, "max_dendrites": 3, "epochs": 200, "quick": False})
    (out / "runs.json").write_text(json.dumps([stored]))
    argv = ["--patience", "3", "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")]
    with pytest.raises(SystemExit, match="--patience 5, not 3"):
        benchmark.main(benchmark.get_args_parser().parse_args(argv))
