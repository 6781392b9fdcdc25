"""experiments/shrink/plan.py and rates.py, and the study's plan: a study of your model prints what it will train and
the minutes it expects before the first run, fits --minutes, reports progress after every run,
continues where it stopped, and ends with the answer in words."""
import contextlib
import io
import re
import sys

import optuna
import pytest
import torch

import train_phase2
from conftest import sweep_flags, sweep_here
from experiments.common import studies
from experiments.shrink import plan, rates
from experiments.shrink import command as shrink
from neuroshrink import data, precision
from neuroshrink.config import RunConfig
from neuroshrink.errors import UsageError
from test_user_data import USER_CNN, write_folder


def test_a_study_of_your_model_defaults_to_what_the_verdict_recommends():
    user = shrink.get_args_parser().parse_args(["--dataset", "folder:images", "--model", "mine:cnn"])
    user = shrink.with_defaults(user)
    assert (user.recipe, user.methods, user.minutes) == ("strong", list(shrink.USER_METHODS), shrink.USER_MINUTES)
    built_in = shrink.get_args_parser().parse_args([])  # digits, net: as the committed reports were made
    built_in = shrink.with_defaults(built_in)
    assert (built_in.recipe, built_in.minutes, built_in.seeds, built_in.trials) == ("default", None, 3, 8)
    assert built_in.methods == list(shrink.DEFAULT_METHODS)  # every method but the dendritic student, asked by name


def test_the_time_budget_takes_the_most_certain_plan_that_fits():
    def estimate(trials, seeds, share, schedule):  # seconds: a minute a trial and seed, less by share and schedule
        return 60 * trials * seeds / share * (schedule or 15) / 15
    assert plan.fit_ladder(estimate, 13) == ((4, 3, 1, None), 720, True)  # 8x3 and 6x3 do not fit
    assert plan.fit_ladder(estimate, 13, seeds=2) == ((6, 2, 1, None), 720, True)  # --seeds given: kept
    assert plan.fit_ladder(estimate, 0.35) == ((1, 2, 4, 10), 20, True)  # a shorter schedule only after all else
    assert plan.fit_ladder(estimate, 0.1) == ((1, 2, 4, 6), 12, False)  # nothing fits: the cheapest, said so
    assert plan.fit_ladder(estimate, 0.1, schedule=15) == ((1, 2, 4, 15), 30, False)  # --schedule-epochs given: kept


def test_progress_scales_what_is_left_by_how_the_finished_runs_did():
    out = io.StringIO()
    progress = plan.Progress([(("search", "plain", 10), 10.0)] * 2 + [(("seeds", "plain", 10), 30.0)], out)
    progress.finished(("search", "plain", 10), 20.0)  # twice its estimate
    line = out.getvalue().strip()
    assert line.startswith("progress: [") and "1/3 runs" in line and "2.00x their estimate" in line
    assert "about 1.3 min left" in line  # (10 + 30) x 2 seconds
    progress.finished(("wide", "wide", None), 5.0)  # not in the plan: nothing to scale
    assert out.getvalue().count("\n") == 1


def test_a_continued_study_is_estimated_from_its_finished_runs():
    done = {("seeds", "dendritic", 10): [100.0, 300.0], ("seeds", "matched", 10): [],
            ("seeds", "plain", 10): [], ("search", "dendritic", 10): [None]}  # a record from before wall time
    assert plan.per_run(("seeds", "dendritic", 10), done, 999.0) == 200.0  # its own finished runs' mean
    assert plan.per_run(("seeds", "matched", 10), done, 999.0) == 200.0  # a control: its paired dendritic runs'
    assert plan.per_run(("seeds", "plain", 10), done, 999.0) == 999.0  # not a control: the timing's estimate
    assert plan.per_run(("search", "dendritic", 10), done, 999.0) == 999.0


def test_the_study_plans_first_fits_its_minutes_and_answers_in_words(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "images")
    (tmp_path / "user_cnn.py").write_text(USER_CNN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    flags = ("--dataset", f"folder:{folder}", "--model", "user_cnn:tiny", "--budgets", "600", "--methods",
             "dendritic", "matched", "--schedule-epochs", "1", "--minutes", "0.5", "--precision", "auto")
    script = "shrink"
    output = sweep_here(tmp_path, *flags, script=script)
    before_training = output[:output.index("=== search")]
    assert "--minutes 0.5: " in before_training and "plan: 2 methods (dendritic, matched)" in before_training
    trained_in = precision.available(torch.device("cpu"))  # auto: one for every run, where there is a choice
    if len(trained_in) > 1:
        trained_in = [re.search(r"precision: (\w+) for every run of this study \(--precision auto", before_training)[1]]
    runs = int(re.search(r"in all: (\d+) runs to train of \1, about [\d.]+ minutes on this machine", output)[1])
    assert runs == output.count("\n=== ") and output.count("progress: [") == runs  # a line after every run
    assert f"{runs}/{runs} runs" in output
    answer = output[output.rindex("## The answer"):]
    assert re.search(r"- 600 parameters: (dendrites helped|dendrites did not help|no difference the seeds can "
                     r"resolve) \(dendritic .* % against .* %.*use \*\*(dendritic|matched)\*\*", answer), answer
    assert "ship deploy/shrink-user_cnn-tiny-strong/600/" in answer
    url = f"sqlite:///{tmp_path / 'results' / 'folder-images' / 'sweep.db'}"
    stored = [studies.open_study(url, s.study_name) for s in optuna.get_all_study_summaries(url)]
    assert {r["precision"] for study in stored for r in studies.records(study)} == set(trained_in)
    report = (tmp_path / "results" / "folder-images" / "shrink-user_cnn-tiny-strong.md").read_text()
    assert report.startswith(answer.strip().split("\n")[0])  # the answer heads the report too
    again = sweep_here(tmp_path, *flags, "--minutes", "30", script=script)  # the stored plan, not a new one
    assert f"in all: 0 runs to train of {runs}" in again and "--minutes" not in again.split("plan:")[0]
    assert "precision: " not in again  # the study's own, as stored with its runs
    with pytest.raises(Exception, match="was sized with --trials"):
        sweep_here(tmp_path, *flags, "--trials", "5", script=script)


def test_where_nothing_else_fits_the_schedule_is_cut_said_and_kept(tmp_path, monkeypatch, capsys):
    folder = write_folder(tmp_path / "images")
    (tmp_path / "user_cnn.py").write_text(USER_CNN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    # a model as slow as a big one: a second per training image, at every width and precision
    monkeypatch.setattr(plan, "measure_rates", lambda model, splits, widths, recipe, names, dendritic_widths: {
        name: {width: rates.Rate(train=1.0, evaluate=0.001, checkpoint=0.01, params=1000) for width in widths}
        for name in names})

    def resolve(*flags):
        return shrink.resolve(shrink.get_args_parser().parse_args(sweep_flags(
            tmp_path, "--dataset", f"folder:{folder}", "--model", "user_cnn:tiny", "--budgets", "600", *flags)))[0]
    study = resolve()
    said = capsys.readouterr().out
    assert (study.trials, study.seeds, study.schedule_epochs, study.search_epochs) == (1, 1, 6, 6)  # the cheapest (--seeds 1 given)
    assert "schedules of 6 epochs (of 15): every method trains less than it would" in said
    assert "the smallest plan still takes about" in said
    assert resolve().schedule_epochs == 6  # a restart trains the plan stored with the study
    with pytest.raises(UsageError, match="was sized with --schedule-epochs 6"):
        resolve("--schedule-epochs", "15")


def test_a_dendritic_widths_rate_is_timed_with_the_librarys_set_and_leaves_nothing_behind(tmp_path, monkeypatch):
    def dendritic_run(out):  # what the study's first run trains, after the plan's timing, in this process
        with contextlib.redirect_stdout(io.StringIO()):
            result = train_phase2.run(RunConfig(quick=True, precision="fp32", threads=1, seed=1, no_export=True), out)
        return [(row["val_acc"], row["dendrite_sets"]) for row in result["history"]], result["final"]["test_acc"]
    before = dendritic_run(tmp_path / "runs" / "before")
    monkeypatch.chdir(tmp_path / "runs")
    measured = rates.measure_rates("net", data.load("digits"), [0.125, 0.25], "strong", ["fp32"],
                                   dendritic_widths={0.125})["fp32"]
    assert measured[0.125].grown is not None and measured[0.25].grown is None  # converted, before and after a set
    assert all(seconds > 0 for seconds in measured[0.125].grown)
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["before"]  # the library's: deleted
    assert dendritic_run(tmp_path / "runs" / "after") == before  # the library's global state: as it was
