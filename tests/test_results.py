"""The committed reports are what their committed records give, and the README and docs show
the verdict tables as they are: no number in them is typed by hand."""
import contextlib
import importlib
import io
import shutil

import pytest

from conftest import ROOT

# Each committed report, with the command that wrote it (`python -m experiments.<name> <flags>`) as
# the docs give it, less --report-only.
FASHION = ["--dataset", "fashion-mnist"]
COMMANDS = {
    "digits/results.md": ("width_sweep", []),
    "digits/search.md": ("search", ["--widths", "0.125", "--trials", "10", "--seeds", "3"]),
    "digits/search-pareto.md": ("search", ["--pareto", "--widths", "0.0625", "0.5", "--trials", "15"]),
    "digits/shrink-net.md": ("shrink", []),
    "digits/shrink-rescnn.md": ("shrink", ["--model", "rescnn"]),
    "digits/shrink-net-strong.md": ("shrink", ["--recipe", "strong"]),
    "fashion-mnist/results.md": ("width_sweep", [*FASHION, "--widths", "0.25", "0.125", "0.0625", "--patience", "3",
                                               "--max-dendrites", "2", "--epochs", "60"]),
    "fashion-mnist/search.md": ("search", [*FASHION, "--methods", "plain", "--widths", "0.25", "--trials", "4",
                                           "--epochs", "60"]),
    "fashion-mnist/shrink-net.md": ("shrink", [*FASHION, "--epochs", "60", "--trials", "4"]),
    "fashion-mnist/shrink-compact-strong.md": ("shrink", [*FASHION, "--model", "compact", "--recipe", "strong",
                                                          "--search-epochs", "5", "--search-images", "15000"]),
    "fashion-mnist/shrink-compact-strong-maintainer.md": ("shrink", [
        *FASHION, "--model", "compact", "--recipe", "strong", "--maintainer", "--search-epochs", "5", "--search-images",
        "15000", "--budgets", "4700", "20000", "75000", "--trials", "24", "--random-trials", "8", "--precision", "fp32",
        "--methods", "dendritic", "matched", "dendritic-distilled", "matched-distilled"]),
    "rerun/digits/shrink-net.md": ("shrink", []),
    "rerun/digits/shrink-rescnn.md": ("shrink", ["--model", "rescnn"]),
    "rerun/digits/shrink-net-strong.md": ("shrink", ["--recipe", "strong", "--budgets", "3658", "--methods", "dendritic",
                                                   "matched"]),
    "rerun/fashion-mnist/shrink-net.md": ("shrink", [*FASHION, "--epochs", "60", "--trials", "4",
                                                     "--methods", "dendritic", "matched"]),
    "rerun/fashion-mnist/shrink-compact-strong.md": ("shrink", [*FASHION, "--model", "compact", "--recipe", "strong",
                                                                "--search-epochs", "5", "--search-images", "15000",
                                                                "--budgets", "4700", "--methods", "dendritic", "matched"]),
    "wd0/fashion-mnist/shrink-compact-strong.md": ("shrink", [*FASHION, "--model", "compact", "--recipe", "strong",
                                                              "--search-epochs", "5", "--search-images", "15000",
                                                              "--budgets", "4700", "20000", "75000", "--methods",
                                                              "dendritic", "matched", "--allow-zero-decay"]),
    **{f"precision-{precision}/digits/results.md": ("width_sweep", ["--widths", "0.25", "0.125", "--precision", precision])
       for precision in ("fp32", "bf16")},
    **{f"precision-{precision}/fashion-mnist/results.md": (
        "width_sweep", [*FASHION, "--widths", "0.125", "--seeds", "3", "--patience", "3", "--max-dendrites", "2",
                      "--epochs", "60", "--precision", precision]) for precision in ("fp32", "bf16")},  # the same command again, into a fresh storage (--results)
}
# Reports made from the records in a sweep.db of a built-in data set. Kept as written: timing
# measurements (families reports, the time-to-accuracy benchmark) and the own-data example (its
# report needs its image folder).
FAMILIES = ("fashion-mnist/families-80000.md", "fashion-mnist/families-75000-strong.md")
# torchvision models studied by the default command (results/own-model-example/default-minutes/): (folder, model)
OWN_MODEL_STUDIES = (("first-try-8-epochs", "resnet18"), ("folder-colour32", "resnet18"), ("pruned-once", "resnet18"),
                     ("folder-colour32", "mobilenet_v3_small"), ("dendrites-timed", "mobilenet_v3_small"))
# ResNet-18's placement, drawn by the --maintainer search (docs/own-model.md)
PLACEMENT = "own-model-example/placement/shrink-torchvision-resnet18-strong-maintainer.md"
AS_WRITTEN = (*FAMILIES, PLACEMENT,
              "own-data-example/folder-fashion4/shrink-my_models-small_cnn.md",
              *(f"own-model-example/folder-colour32/shrink-torchvision-{name}-strong.md"
                for name in ("resnet18", "mobilenet_v3_small")),
              *(f"own-data-example/folder-fashion10/{study}shrink-my_models-lenet-strong.md"
                for study in ("", "four-trials/", "long/")),
              *(f"own-model-example/default-minutes/{study}/shrink-torchvision-{name}-strong.md"
                for study, name in OWN_MODEL_STUDIES))
# Made from a recipe.csv, not a sweep.db: (the command's flags less --report-only, the docs page showing it)
RECIPES = {"fashion-mnist/recipe.md": ([], "recipe.md"),
           "precision-bf16/fashion-mnist/recipe.md": (["--precision", "bf16", "--budgets", "75000"], "performance.md")}
PEAK_MEMORY = "memory/peak-memory.md"  # made from its peak-memory.json (the last tests)
STUDY_TIME = "speed/study-time.md"  # made from its study-time.json
WIDE_RUN_TIME = "speed/wide-run-time.md"  # made from its wide-run-time.json
TIME_TO_TARGET = "speed/fashion-mnist-time-to-target.md"  # made from its .json
REPORTS = sorted(str(path.relative_to(ROOT / "results")) for path in ROOT.glob("results/**/*.md")
                 if str(path.relative_to(ROOT / "results")) not in (*AS_WRITTEN, *RECIPES, PEAK_MEMORY, STUDY_TIME,
                                                                   WIDE_RUN_TIME, TIME_TO_TARGET)
                 and "deploy" not in path.parts)  # a shipped model's README: experiments/common/deploy.py
VERDICTS = [report for report in REPORTS if "/shrink-" in report]


def accuracy_table(report):
    """The per-budget accuracy table of a verdict: its lines from the header to the blank line."""
    lines = report.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| method |")))
    return "\n".join(lines[start:lines.index("", start)])


def test_every_committed_report_has_its_command():
    assert VERDICTS and set(REPORTS) <= set(COMMANDS)  # else the checks below would pass on nothing


@pytest.mark.parametrize("report", REPORTS)
def test_a_committed_report_is_what_its_records_give(report, tmp_path):
    script, flags = COMMANDS[report]
    committed = ROOT / "results" / report
    store = tmp_path / "results" / committed.parent.name
    store.mkdir(parents=True)
    shutil.copy(committed.parent / "sweep.db", store / "sweep.db")  # the report reads the records only,
    for latency in committed.parent.glob("*-latency.json"):  # and a strong verdict its timing pass
        shutil.copy(latency, store / latency.name)
    kept = committed.parent / f"{committed.stem}-models"  # and its models, whose winners its answer ships
    if kept.is_dir():
        shutil.copytree(kept, store / kept.name)
    module = importlib.import_module(f"experiments.{script}")
    with contextlib.redirect_stdout(io.StringIO()):
        args = [*flags, "--report-only", "--results", str(tmp_path / "results")]
        module.main(module.get_args_parser().parse_args(args))
    assert (store / committed.name).read_text() == committed.read_text()
    table = committed.with_suffix(".csv") if script == "shrink" else committed.parent / "runs.csv"
    if script != "search":
        assert (store / table.name).read_text() == table.read_text()


@pytest.mark.parametrize("report", VERDICTS)
def test_the_docs_show_a_committed_verdict_as_it_is(report):
    page = "verdict-strong.md" if "-strong" in report else "verdict.md"
    assert accuracy_table((ROOT / "results" / report).read_text()) in (ROOT / "docs" / page).read_text()


def test_the_readmes_answer_table_is_rows_of_a_committed_verdict():
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("## The answer so far")
    rows = [line for line in readme[start:readme.index("## Quick start")] if line.startswith("| ")]
    header, *methods = rows
    tables = [accuracy_table((ROOT / "results" / report).read_text()).splitlines() for report in VERDICTS]
    assert len(methods) >= 4 and any(header == table[0] and set(methods) <= set(table) for table in tables)


@pytest.mark.parametrize("report", FAMILIES)
def test_the_docs_show_the_families_measurement_as_it_is(report):
    committed = (ROOT / "results" / report).read_text()
    table = committed[committed.index("| model |"):].strip()
    assert table in (ROOT / "docs" / "families.md").read_text()


def test_the_own_data_page_shows_its_examples_report_as_it_is():
    report = (ROOT / "results" / "own-data-example/folder-fashion4/shrink-my_models-small_cnn.md").read_text()
    assert accuracy_table(report) in (ROOT / "docs" / "own-data.md").read_text()


def test_the_own_data_page_quotes_the_timed_studys_answers_as_they_are():
    """Every dendritic and matched accuracy the three LeNet studies' answers give, in the page."""
    import re

    page = (ROOT / "docs" / "own-data.md").read_text()
    for study in ("", "four-trials/", "long/"):
        report = (ROOT / "results" / f"own-data-example/folder-fashion10/{study}shrink-my_models-lenet-strong.md")
        answer = report.read_text().split("\n## Which method")[0]
        numbers = re.findall(r"\d+\.\d+ ± \d+\.\d+", answer)
        assert len(numbers) == 6 and all(number in page for number in numbers), study


# Studies run by their default command, kept as written (their reports need the image folder):
# each report, and what its studies' names begin with.
ANSWERED = {
    "own-data-example/folder-fashion10/shrink-my_models-lenet-strong.md":
        "shrink-folder-neuroshrink-fashion10-my_models-lenet-strong",
    **{f"own-model-example/default-minutes/{study}/shrink-torchvision-{name}-strong.md":
       f"shrink-folder-colour32-torchvision-{name}-strong" for study, name in OWN_MODEL_STUDIES},
    PLACEMENT: "shrink-folder-colour32-torchvision-resnet18-strong-maintainer",
}


@pytest.mark.parametrize("report", ANSWERED)
def test_a_timed_default_studys_answer_is_what_its_committed_records_give(report):
    """Every dendritic and matched mean ± std the answer gives, recomputed from the seed records in
    the study's sweep.db."""
    import re

    from experiments.common import studies
    from experiments.common.tables import fmt, mean_std

    path = ROOT / "results" / report
    url = f"sqlite:///{path.parent / 'sweep.db'}"
    answer = path.read_text().split("\n## Which method")[0]
    budgets = [int(n.replace(",", "")) for n in re.findall(r"^- ([\d,]+) parameters", answer, re.MULTILINE)]
    assert len(budgets) == (1 if report == PLACEMENT else 3)
    for budget in budgets:
        line = next(line for line in answer.splitlines() if line.startswith(f"- {budget:,} parameters"))
        for method in ("dendritic", "matched"):
            records = studies.records(studies.open_study(url, f"{ANSWERED[report]}-b{budget}-{method}-seeds"))
            assert len(records) >= 2
            assert fmt(mean_std([r["test_acc"] for r in records])) in line, (budget, method)


@pytest.mark.parametrize("report", RECIPES)
def test_a_recipe_report_is_what_its_csv_gives_and_the_docs_show_it(tmp_path, report):
    from experiments import strong_recipe

    flags, page = RECIPES[report]
    committed = ROOT / "results" / report
    store = tmp_path / "fashion-mnist"
    store.mkdir()
    shutil.copy(committed.with_suffix(".csv"), store / "recipe.csv")
    with contextlib.redirect_stdout(io.StringIO()):
        strong_recipe.main(strong_recipe.get_args_parser().parse_args(
            ["--dataset", "fashion-mnist", *flags, "--report-only", "--results", str(tmp_path)]))
    report = (store / "recipe.md").read_text()
    assert report == committed.read_text()
    table = report[report.index("| model |"):report.index("\n\n", report.index("| model |"))]
    assert table in (ROOT / "docs" / page).read_text()


def test_the_peak_memory_report_is_what_its_records_give_and_the_own_data_page_shows_it():
    import json

    from experiments import peak_memory

    committed = ROOT / "results" / PEAK_MEMORY
    report = peak_memory.report(json.loads(committed.with_suffix(".json").read_text()))
    assert report == committed.read_text()
    table = report[report.index("| run |"):].split("\n\n")[0]
    assert "\n".join("  " + line for line in table.splitlines()) in (ROOT / "docs" / "own-data.md").read_text()


@pytest.mark.parametrize("path, what", [(STUDY_TIME, "STUDY"), (WIDE_RUN_TIME, "WIDE")])
def test_the_study_time_reports_are_what_their_records_give_and_the_own_data_page_shows_them(path, what):
    import json

    from experiments import study_time

    committed = ROOT / "results" / path
    report = study_time.report(json.loads(committed.with_suffix(".json").read_text()), getattr(study_time, what))
    assert report == committed.read_text()
    table = report[report.index("| |"):].split("\n\n")[0]
    assert table in (ROOT / "docs" / "own-data.md").read_text()


def test_the_time_to_target_report_is_what_its_records_give_and_the_performance_page_shows_it():
    """The benchmark's report from its committed record alone; every recipe's accuracies and
    minutes as the performance page quotes them."""
    import json

    from experiments.speed import time_to_target

    committed = ROOT / "results" / TIME_TO_TARGET
    record = json.loads(committed.with_suffix(".json").read_text())
    assert time_to_target.report(record) == committed.read_text()
    page = (ROOT / "docs" / "performance.md").read_text()
    for line in committed.read_text().splitlines():
        if line.startswith("| ") and line.split(" | ")[0][2:] in record["recipes"]:
            cells = line.split(" | ")
            assert " | ".join(cells[2:]) in page, cells[0]  # params to the time ratio


def test_the_own_model_page_shows_the_placement_searchs_trials_as_they_are():
    """Every trial of ResNet-18's --maintainer search, its layout and validation accuracy as its
    sweep.db holds them, in the page's table."""
    from experiments.common import studies

    url = f"sqlite:///{ROOT / 'results' / PLACEMENT.rsplit('/', 1)[0] / 'sweep.db'}"
    search = studies.open_study(url, f"{ANSWERED[PLACEMENT]}-b1397705-dendritic-search")
    page = (ROOT / "docs" / "own-model.md").read_text()
    trials = studies.finished(search)
    assert len(trials) == 12
    for trial in trials:
        assert f"| {trial.number} | {trial.user_attrs['record']['hp']['layout']} | {trial.value:.2f} |" in page
