"""experiments/common/studies.py: sweeps shared by worker processes: real workers, real storages
(SQLite; PostgreSQL when its server binaries are installed), killed for real."""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from optuna.trial import TrialState

from conftest import finish, study_of, sweep_here, sweep_worker
from experiments.common import studies
from neuroshrink.run_folder import Interrupted


def trained(outputs):
    """The cells the workers announced (each announcement is one training run)."""
    return [line.split(":")[0] for out in outputs for line in out.splitlines() if line.startswith("=== ")]


def outcome(records):
    """What a run's seed determines, by cell (not its wall time)."""
    return {(r["width"], r["method"], r["seed"]): (r["test_acc"], r["val_acc"], r["params"], r["epochs"],
                                                   r["dendrite_sets"]) for r in records}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server in a temporary folder on a loopback port."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if binaries[-1] is None:
        if os.environ.get("NEUROSHRINK_REQUIRE_POSTGRES"):  # CI installs it: there, absence is a failure
            pytest.fail("PostgreSQL's server binaries are not installed")
        pytest.skip("PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)")
    bin_dir = os.path.dirname(binaries[-1])
    folder = tempfile.mkdtemp(prefix="neuroshrink-pg-")
    as_server_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(folder, "postgres")
        as_server_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), free_port()

    def pg(tool, *args):
        subprocess.run([*as_server_user, os.path.join(bin_dir, tool), *args], check=True, capture_output=True)
    pg("initdb", "-D", data, "--auth=trust", "-U", "postgres")
    pg("pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "start",
       "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg("pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("storage, widths", [("sqlite", ["0.25"]), ("postgresql", ["0.25"])])  # a cell each
def test_two_workers_share_the_sweep_and_train_each_cell_once(storage, widths, tmp_path, tiny_sweep, request):
    url = request.getfixturevalue("postgres_url") if storage == "postgresql" else None
    flags = ["--widths", *widths] + (["--storage", url] if url else [])
    other = sweep_worker(tmp_path, *flags)
    deadline = time.time() + 120
    while " runs: " not in other.log.read_text():  # start together: both find the first cells waiting
        assert time.time() < deadline and other.poll() is None, other.log.read_text()
        time.sleep(0.05)
    outputs = [sweep_here(tmp_path, *flags), finish(other)]

    alone = {cell: result for cell, result in outcome(tiny_sweep["records"]).items() if str(cell[0]) in widths}
    assert len(trained(outputs)) == len(set(trained(outputs))) == len(alone)  # each cell once
    assert outcome(studies.records(study_of(tmp_path, url))) == alone  # the same numbers as one worker's
    def accuracy_rows(folder):  # the first table's row of each width, less its two wall-time columns
        lines = (folder / "results.md").read_text().splitlines()
        return [next(line for line in lines if line.startswith(f"| {width} |")).rsplit("|", 3)[0] for width in widths]
    assert accuracy_rows(tmp_path / "results" / "digits") == accuracy_rows(tiny_sweep["results"])


def test_a_killed_worker_loses_nothing_and_nothing_is_trained_twice(tmp_path, tiny_sweep):
    first = sweep_worker(tmp_path, "--widths", "0.25")
    run = tmp_path / "runs" / "digits" / "w0p25_dendritic_s1" / "results.json"
    deadline = time.time() + 120
    while not (run.exists() and len(json.loads(run.read_text())["history"]) >= 2):
        assert time.time() < deadline and first.poll() is None, "the first worker never got to epoch 2"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    killed_after = len(json.loads(run.read_text())["history"])

    output = sweep_here(tmp_path, "--widths", "0.25")  # the next worker
    assert f"resuming after epoch {killed_after}" in output  # continued from its run folder
    history = json.loads(run.read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))  # no epoch twice

    trials = study_of(tmp_path).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["cell"]["method"] == "dendritic"  # the killed worker's
    complete = [t.user_attrs["cell"] for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(c["method"] for c in complete) == ["dendritic", "plain"]  # each cell once
    width = {key: value for key, value in outcome(tiny_sweep["records"]).items() if key[0] == 0.25}
    assert outcome(studies.records(study_of(tmp_path))) == width  # as if never killed


def test_a_cell_enqueued_twice_is_trained_once(tmp_path):
    """Two workers starting together may both enqueue a cell: the later copy steps aside."""
    study = studies.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", "race")
    x, y = {"name": "x"}, {"name": "y"}
    for cell in (x, x, y):
        study.enqueue_trial({}, user_attrs={"cell": cell})
    assert studies.owner(study, x) == 0
    trained = []

    def train(cell):
        assert studies.owner(study, cell) == min(t.number for t in study.get_trials() if t.user_attrs["cell"] == cell)
        trained.append(cell["name"])
        return 1.0, {"cell": cell}
    studies.work(study, lambda records: [x, y], train, poll=0.1)
    assert sorted(trained) == ["x", "y"]
    skipped = [t.user_attrs.get("skipped") for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert skipped == ["trial 0 trains this cell"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() stands in for another worker here
def test_a_worker_that_need_not_wait_moves_on_while_another_trains(monkeypatch):
    """wait=False: the cells ready to start are trained, and the worker returns while another
    worker still trains its cell (it moves on to other studies instead of idling)."""
    def no_waiting(seconds):
        raise AssertionError("the worker waited for another worker's cell")
    monkeypatch.setattr(studies.time, "sleep", no_waiting)  # a wait fails the test instead of hanging it
    with tempfile.TemporaryDirectory() as folder:
        study = studies.open_study(f"sqlite:///{folder}/sweep.db", "seeds", heartbeat=60)
        x, y = {"name": "x"}, {"name": "y"}
        study.enqueue_trial({}, user_attrs={"cell": x})
        study.ask()  # another worker took x and trains it
        trained = []

        def train(cell):
            trained.append(cell["name"])
            return 1.0, {"cell": cell}
        studies.work(study, lambda records: [x, y], train, poll=0.1, wait=False)
        assert trained == ["y"]
        assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.COMPLETE]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() stands in for another worker here
def test_a_search_counts_the_trials_made_before_a_new_one(tmp_path):
    """What keeps the trial count exact when two workers start trials at the same moment."""
    study = studies.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", "count")
    studies.add_record(study, {"n": 0}, {"val_acc": 1.0}, 1.0)        # trial 0: finished
    running = study.ask()                                            # trial 1: another worker's, running
    study.tell(study.ask(), state=TrialState.PRUNED)                  # trial 2: skipped, does not count
    studies.add_record(study, {"n": 3}, {"val_acc": 1.0}, 1.0)        # trial 3: finished
    assert running.number == 1
    assert [studies.trials_before(study, n) for n in (0, 1, 2, 3, 4)] == [0, 1, 2, 2, 3]


def test_a_stopped_search_trial_is_continued_with_its_hyperparameters_in_its_folder(tmp_path):
    """A stop (Ctrl-C, SIGTERM) mid-trial: the next worker continues that trial rather than
    drawing a new configuration, so the stopped epochs are kept and the trial count stays exact."""
    study = studies.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", "stopped")
    trained = []

    def train(trial, name, stop_at=None):
        x = trial.suggest_float("x", 0.0, 1.0)
        if name == stop_at:
            raise Interrupted(signal.SIGTERM)
        trained.append((name, x))
        return x, {"x": x}

    with pytest.raises(Interrupted):
        studies.search(study, 3, lambda trial, name: train(trial, name, stop_at="trial1"), poll=0.1)
    stopped = next(t for t in study.get_trials() if t.state == TrialState.FAIL)
    studies.search(study, 3, train, poll=0.1)  # the next worker

    # trial 2 continued trial 1 in its folder; trial 3 is the third configuration
    assert [name for name, _ in trained] == ["trial0", "trial1", "trial3"]
    assert trained[1][1] == stopped.params["x"]  # the stopped trial's configuration, not a new draw
    assert len(studies.records(study)) == 3


def configurations(study, n_trials, stop_at=None):
    """The configurations a search trains, in order (the trial `stop_at` is stopped once)."""
    drawn = []

    def train(trial, name):
        hp = (trial.suggest_float("lr", 1e-4, 1e-1, log=True), trial.suggest_categorical("patience", [3, 4, 5]))
        if name == stop_at and name not in [n for n, _ in drawn]:
            drawn.append((name, None))
            raise Interrupted(signal.SIGTERM)
        drawn.append((name, hp))
        return hp[0], {"hp": hp}
    while True:
        try:
            studies.search(study, n_trials, train, poll=0.1)
            return [hp for _, hp in drawn if hp is not None]
        except Interrupted:
            pass  # the next worker


def test_a_rerun_of_a_search_draws_the_same_configurations_even_after_a_stop(tmp_path):
    """The default sampler's draws depend on the study's name and the number of configurations
    drawn before, not on the process, nor on a stopped trial that was continued."""
    first = configurations(studies.open_study(f"sqlite:///{tmp_path / 'a.db'}", "search"), 4)
    rerun = configurations(studies.open_study(f"sqlite:///{tmp_path / 'b.db'}", "search"), 4, stop_at="trial1")
    other = configurations(studies.open_study(f"sqlite:///{tmp_path / 'a.db'}", "another search"), 4)
    assert rerun == first
    assert len(set(first)) == 4 and not set(other) & set(first)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() stands in for two workers here
def test_two_workers_starting_together_draw_different_configurations(tmp_path):
    study = studies.open_study(f"sqlite:///{tmp_path / 'a.db'}", "search")
    one, two = study.ask(), study.ask()  # neither has finished when the other draws
    together = [trial.suggest_float("lr", 1e-4, 1e-1, log=True) for trial in (one, two)]
    alone = studies.open_study(f"sqlite:///{tmp_path / 'b.db'}", "search")
    in_turn = []
    for _ in range(2):
        trial = alone.ask()
        in_turn.append(trial.suggest_float("lr", 1e-4, 1e-1, log=True))
        alone.tell(trial, in_turn[-1])
    assert together == in_turn and together[0] != together[1]
