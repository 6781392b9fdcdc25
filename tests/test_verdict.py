"""experiments/shrink/ --recipe strong and its report (experiments/shrink/report.py), trained for real on tiny
data: the search's reduction is every method's, every method trains the dendritic run's
epochs, the int8 row is the same run's model quantized, the report counts the files' bytes
and regenerates from its records."""
import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from conftest import built_once, sweep_here
from experiments.common import kept_runs, studies
from experiments.shrink import report
from experiments.shrink import command as shrink
from model import count_parameters
from neuroshrink import build, export
from neuroshrink.config import RunConfig
from neuroshrink.errors import UsageError

STRONG = ("--recipe", "strong", "--budgets", "1000", "--trials", "1", "--random-trials", "1", "--schedule-epochs", "1",
          "--search-images", "300", "--epochs", "10", "--wide", "0.25")  # a wide model of 3,658: pruned in few steps
SEARCHED = ("dendritic", "plain", "pruned", "distilled")


@pytest.fixture(scope="session")
def strong_sweep(tmp_path_factory):
    """Every method of the strong verdict at one budget: a search trial each on 300 training
    images and 1-epoch schedules, the wide model, then seed 1 of each."""
    tmp = built_once(tmp_path_factory, "strong_sweep", lambda folder: sweep_here(folder, *STRONG, script="shrink"))
    url = f"sqlite:///{tmp / 'results' / 'digits' / 'sweep.db'}"

    def records(method, stage="seeds"):
        name = "shrink-digits-net-strong-" + ("wide" if method == "wide" else f"b1000-{method}-{stage}")
        return studies.records(studies.open_study(url, name))
    return {"tmp": tmp, "records": records}


def run_of(record):
    return json.loads((Path(record["run"]) / "results.json").read_text())


def search_runs(tmp, method):
    return [json.loads(p.read_text()) for p in
            sorted((tmp / "runs" / "digits" / f"shrink-digits-net-strong-b1000-{method}-search").glob("*/results.json"))]


def test_the_search_reduction_is_the_same_for_every_method(strong_sweep):
    """Every search trial, whatever its method: the same training images, the same epochs."""
    budgets = {}
    for method in SEARCHED:
        runs = search_runs(strong_sweep["tmp"], method)
        assert len(runs) == 1, method
        budgets[method] = {(r["settings"]["data_sizes"]["train"], r["final"]["epochs"]) for r in runs}
    assert budgets == {method: {(300, 2)} for method in SEARCHED}  # 2 epochs: a schedule each side of the switch
    report = (strong_sweep["tmp"] / "results" / "digits" / "shrink-net-strong.md").read_text()
    assert "Each method tuned by 1 search trial (drawn at random) on validation" in report  # the report says so


def test_every_method_trains_the_dendritic_runs_epochs(strong_sweep):
    dendritic, = strong_sweep["records"]("dendritic")
    assert dendritic["restarts"] == [1]  # the set added as its first 1-epoch schedule ended
    for method in ("plain", "matched", "pruned", "distilled"):
        record, = strong_sweep["records"](method)
        settings = run_of(record)["settings"]
        assert record["epochs"] == dendritic["epochs"] == settings["min_epochs"], method
        assert settings["recipe"] == "strong" and settings["train_images"] is None, method
        # plain: one schedule over the budget; matched: the dendritic run's, restarted where it restructured
        assert settings["schedule_epochs"] == (1 if method == "matched" else dendritic["epochs"]), method
    matched = run_of(strong_sweep["records"]("matched")[0])
    assert matched["settings"]["restart_at"] == dendritic["restarts"]


def test_the_int8_row_is_the_same_runs_model_quantized(strong_sweep, tmp_path):
    for method in shrink.STRONG_METHODS:
        record, = strong_sweep["records"](method)
        run = Path(record["run"])
        assert record["int8"]["bytes"] == (run / "model.int8.onnx").stat().st_size
        assert record["onnx"]["bytes"] == (run / "model.onnx").stat().st_size
        assert record["onnx"]["test_acc"] == pytest.approx(record["test_acc"])  # the trained model, exported
        # Quantizing the run's own model.onnx again gives its int8 model's accuracy.
        settings = run_of(record)["settings"]
        splits = build.splits_of(settings)
        network = export.export_network(run / "model.ts", tmp_path / "network.onnx", splits.normalise(splits.val[0]))
        calibration = splits.normalise(splits.train[0][:export.CALIBRATION_IMAGES])
        again = export.quantize_int8(network, tmp_path / "int8.onnx", calibration)
        again = export.self_contained(again, tmp_path / "model.int8.onnx", splits.normalisation, {})
        accuracy = export.ort_accuracy(export.ort_session(again), *splits.test, splits.normalisation)
        assert accuracy == record["int8"]["test_acc"], method
    # The wide model is pruned and distilled from, never reported in bytes or shipped: it is not
    # quantized, nor timed (its model.ts is what the methods read).
    for record in strong_sweep["records"]("wide"):
        assert record["int8"] is None and record["inference_ms"] is None
        assert (Path(record["run"]) / "model.ts").is_file() and not (Path(record["run"]) / "model.int8.onnx").exists()


def test_the_report_counts_the_files_bytes_and_regenerates(strong_sweep, tmp_path):
    results = strong_sweep["tmp"] / "results" / "digits"
    rows = list(csv.DictReader(open(results / "shrink-net-strong.csv")))
    assert {(r["method"], r["precision"]) for r in rows} == {(m, k) for m in shrink.STRONG_METHODS
                                                             for k in ("fp32", "int8")}
    for row in rows:
        record, = strong_sweep["records"](row["method"])
        file = "model.onnx" if row["precision"] == "fp32" else "model.int8.onnx"
        assert int(row["bytes_mean"]) == (Path(record["run"]) / file).stat().st_size
    before = {name: (results / name).read_bytes() for name in ("shrink-net-strong.md", "shrink-net-strong.csv")}
    copy = tmp_path / "results" / "digits"
    shutil.copytree(results, copy)
    sweep_here(tmp_path, *STRONG, "--report-only", script="shrink")
    assert {name: (copy / name).read_bytes() for name in before} == before


def elsewhere(record, tmp_path):
    """The record as another machine sees it: its run folder is not there."""
    return record | {"run": str(tmp_path / "not-here" / Path(record["run"]).parent.name / Path(record["run"]).name)}


def test_the_final_models_are_kept_with_the_records_for_another_machine(strong_sweep, tmp_path):
    kept = strong_sweep["tmp"] / "results" / "digits" / "shrink-net-strong-models"
    for method, files in [*((m, kept_runs.SEED_FILES) for m in shrink.STRONG_METHODS), ("wide", kept_runs.WIDE_FILES)]:
        for record in strong_sweep["records"](method):
            for file in files:
                assert (kept_runs.kept(record, kept) / file).read_bytes() == (Path(record["run"]) / file).read_bytes()
    # Without its run folder (a sweep continued elsewhere), pruning starts from the kept wide model.
    wide = elsewhere(strong_sweep["records"]("wide")[1], tmp_path)
    folder = kept_runs.run_folder(wide, kept, kept_runs.WIDE_FILES)
    assert folder == kept_runs.kept(wide, kept)
    splits = build.splits_of(RunConfig(quick=True))
    assert count_parameters(build.pruned_from_run(folder, 1000, splits, "digits", True, "lamp")) <= 1100
    with pytest.raises(UsageError, match="neither there nor in"):
        kept_runs.run_folder(wide, tmp_path / "empty", kept_runs.WIDE_FILES)


def test_the_timing_pass_times_every_final_model(strong_sweep, tmp_path):
    shutil.copytree(strong_sweep["tmp"] / "results", tmp_path / "results")
    args = shrink.get_args_parser().parse_args(["--quick", "--seeds", "1", *STRONG, "--report-only",
                                                "--results", str(tmp_path / "results")])
    rows = shrink.main(args)
    splits = build.splits_of(RunConfig(quick=True))
    kept = tmp_path / "results" / "digits" / "shrink-net-strong-models"  # the run folders are not needed
    rows = [row | {"records": [elsewhere(r, tmp_path) for r in row["records"]]} for row in rows]
    latency = kept_runs.time_inference(rows, splits, tmp_path / "latency.json", kept, min_seconds=0)
    assert set(latency["runs"]) == {r["run"] for row in rows for r in row["records"]}
    assert all(ms[kind][batch] > 0 for ms in latency["runs"].values() for kind in ("fp32", "int8")
               for batch in ("1", "256"))
    both = report.kind_rows(rows, latency)
    assert all(len(r["ms1"]) == r["n"] for r in both)
    assert statistics.median(both[0]["ms1"]) == latency["runs"][rows[0]["records"][0]["run"]][both[0]["kind"]]["1"]


def test_training_minutes_name_every_cpu_and_precision_they_were_measured_in():
    one = report.training_machines(["AMD EPYC"] * 3, ["bf16"] * 3)
    assert one == "Training minutes: each seed run's wall clock, on the AMD EPYC (3 runs), trained in bf16."
    mixed = report.training_machines(["AMD EPYC", "Intel Xeon, AMX", "Intel Xeon, AMX", None],
                                     ["fp32", "bf16", "bf16", "bf16"])
    assert mixed == ("Training minutes: each seed run's wall clock, on the Intel Xeon, AMX (2 runs) and the AMD "
                     "EPYC (1 run) and an unrecorded CPU (1 run), trained in bf16 (3 runs) and fp32 (1 run), as "
                     "--precision auto chose for each run; they compare only between runs on one CPU.")


@pytest.mark.parametrize("flags, message", [
    (("--recipe", "strong", "--methods", "dendritic-mnist"), "train with a library recipe of their own"),
    (("--search-images", "100"), "only with --recipe strong"),
    (("--recipe", "strong", "--epochs", "20", "--schedule-epochs", "15"), "a dendritic run takes 30"),
])
def test_flags_that_do_not_go_together_are_refused(flags, message):
    args = shrink.get_args_parser().parse_args(list(flags))
    with pytest.raises(UsageError, match=message):
        shrink.with_defaults(args)


def test_the_sweep_ships_the_winner_chosen_by_validation(strong_sweep):
    """deploy/<study>/<budget>/: the method with the best mean validation accuracy, its best
    validation seed, both files self-contained, a README with the predict command."""
    from neuroshrink import predict

    records = [r for m in shrink.STRONG_METHODS for r in strong_sweep["records"](m)]
    best = max(records, key=lambda r: r["val_acc"])  # one seed a method: its mean is its seed's
    folder = strong_sweep["tmp"] / "results" / "digits" / "deploy" / "shrink-net-strong" / "1000"
    for file, key in (("model.onnx", "onnx"), ("model.int8.onnx", "int8")):
        meta = export.read_metadata(folder / file)
        assert (meta["method"], meta["seed"], meta["test_acc"]) == (best["method"], best["seed"], best[key]["test_acc"])
        assert predict.Model(folder / file).classes == [str(i) for i in range(10)]
    readme = (folder / "README.md").read_text()
    assert "python -m neuroshrink.predict model.onnx" in readme
    # the study's runs timed nothing (its report's milliseconds are --time-inference's): the shipped files are
    assert not any("ort_ms" in r["onnx"] or r["inference_ms"] for r in records)
    assert "Milliseconds: measured as it was shipped (" in readme
    assert all(float(line.split("|")[-2]) > 0 for line in readme.splitlines() if line.startswith("| model."))
    assert "ship deploy/shrink-net-strong/1000/" in (strong_sweep["tmp"] / "output.txt").read_text()  # the answer


def test_fit_ships_the_most_accurate_on_validation_within_the_limits(strong_sweep, tmp_path):
    shutil.copytree(strong_sweep["tmp"] / "results", tmp_path / "results")
    records = [r for m in shrink.STRONG_METHODS for r in strong_sweep["records"](m)]
    sweep_here(tmp_path, *STRONG, "--fit", "1MB", "1000ms", script="shrink")  # every file fits
    folder = tmp_path / "results" / "digits" / "deploy" / "shrink-net-strong" / "fit-1000kB-1000ms"
    (shipped,) = folder.glob("*.onnx")
    splits = build.splits_of(RunConfig(quick=True))
    validation = export.ort_accuracy(export.ort_session(shipped), *splits.val, splits.normalisation)
    assert validation >= max(r["val_acc"] for r in records)  # no fp32 file is better on validation
    meta = export.read_metadata(shipped)
    chosen = next(r for r in records if (r["method"], r["seed"]) == (meta["method"], meta["seed"]))
    assert meta["test_acc"] == chosen["onnx" if shipped.name == "model.onnx" else "int8"]["test_acc"]
    assert f"{validation:.2f}" in (folder / "README.md").read_text()
    smallest = min(min(r["onnx"]["bytes"], r["int8"]["bytes"]) for r in records)
    with pytest.raises(UsageError, match=f"no model of shrink-net-strong is within {smallest - 1:,} bytes"):
        sweep_here(tmp_path, *STRONG, "--fit", f"{smallest - 1}B", script="shrink")  # below the smallest file
