"""Sweeps as Optuna studies, so that one sweep can be shared by many worker processes.

Every training run of a sweep is a trial. A *cell* (the run's fixed settings, a small dict
such as {"width": 0.25, "method": "plain", "seed": 1}) is enqueued once and taken by exactly
one worker; its outcome (a *record*) is stored with the trial. Workers record a heartbeat:
the cell of a worker that vanished (SIGKILL, lost machine) is failed after the grace period
and enqueued again, and whoever takes it continues from the run folder if it can see it.

The storage is any database URL Optuna takes: by default a SQLite file next to the
results (no server), or postgresql://... so that workers on several machines share a sweep.
Optuna's journal file needs no server either, but it has no heartbeat, so a killed worker's
cell would stay "running" for ever.
"""

import functools
import json
import os
import socket
import time
import warnings
import zlib

import optuna
import sqlalchemy
from optuna.trial import TrialState

from neuroshrink.records import migrate
from neuroshrink.errors import NeuroShrinkError, first_line
from neuroshrink.run_folder import Interrupted

optuna.logging.set_verbosity(optuna.logging.ERROR)  # the workers print their own progress; errors are raised

RETRIES = 3  # a cell whose worker vanished this many times is given up (it is failing for a reason)


class StorageError(NeuroShrinkError):
    """The storage cannot be opened; the message is one line."""


def quietly():
    """Optuna marks its heartbeat "experimental" and warns at every use; we know."""
    return warnings.catch_warnings(action="ignore", category=optuna.exceptions.ExperimentalWarning)


@functools.cache
def storage(url, heartbeat=30):
    """The storage at `url`, opened once per process (opening checks the schema: a third of a
    second each time, for every study a report reads). A running trial whose heartbeat (every
    `heartbeat` seconds) is 3 beats late is failed and retried."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # wait on a busy file
    for attempt in range(5):
        try:
            with quietly():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(RETRIES))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            if attempt == 4:  # not a race with another worker creating the same new storage
                raise StorageError(f"cannot open the storage {url}: {first_line(e)}") from None
            time.sleep(1 + attempt)
        except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as e:  # a malformed URL, a missing driver
            raise StorageError(f"cannot open the storage {url}: {first_line(e)}") from None


class SeededTPE(optuna.samplers.TPESampler):
    """Optuna's TPE sampler, whose random draw of a parameter for a study's k-th configuration
    depends on (seed, study name, k, parameter) alone: a rerun of the study draws what the first
    run drew, however many workers take part and however often a trial was stopped and
    continued. (Seeding the sampler once per process would repeat the first draws after every
    restart, and give two workers started together the same draws.) With fewer than TPE's 10
    start-up trials every draw is random, so the whole search is reproduced; after them, TPE
    also depends on the finished trials it sees. `random_trials`: that number of start-up
    trials (Optuna's default 10)."""

    def __init__(self, seed=0, random_trials=10):
        super().__init__(n_startup_trials=random_trials)
        self.seed = seed

    def sample_independent(self, study, trial, param_name, param_distribution):
        k = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and draws(t))
        key = zlib.crc32(f"{self.seed}/{study.study_name}/{k}/{param_name}".encode())
        # Optuna internals (pinned in requirements.txt): TPE's random generator and its start-up sampler's
        self._rng.rng.seed(key)
        self._random_sampler._rng.rng.seed(key)
        return super().sample_independent(study, trial, param_name, param_distribution)


def draws(trial):
    """Whether the trial drew a configuration of its own: not the retry of a vanished worker's
    trial (Optuna's), nor the continuation of a stopped one, nor a trial that stepped aside."""
    return not ("failed_trial" in trial.system_attrs or "continues" in trial.user_attrs
                or "skipped" in trial.user_attrs)


def open_study(url, name, heartbeat=30, directions=("maximize",), sampler=None):
    """The study `name` in the storage at `url`, created on first use; `sampler` draws its
    search trials (default: TPE, reproducibly seeded)."""
    stored, sampler = storage(url, heartbeat), sampler or SeededTPE()
    try:  # most opens find it there: create_study's failed insert first takes three times as long
        return optuna.load_study(storage=stored, study_name=name, sampler=sampler)
    except KeyError:
        return optuna.create_study(storage=stored, study_name=name, directions=list(directions), sampler=sampler,
                                   load_if_exists=True)  # another worker may create it first


def study_exists(url, name):
    try:  # one query by name (optuna.get_all_study_names reads every study's attributes)
        storage(url).get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def finished(study):
    """The trials that trained and stored a record, in the order they were made."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "record" in t.user_attrs]


def records(study):
    """The records of the finished cells, in the order they were trained (or imported), brought
    up to date (records.migrate)."""
    return [migrate(t.user_attrs["record"]) for t in finished(study)]


def running(study):
    """The cells being trained now."""
    return [t.user_attrs["cell"] for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if "cell" in t.user_attrs]


def add_record(study, cell, record, value, **attrs):
    """Store a finished cell that was trained elsewhere (records from before this storage)."""
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value,
                                              user_attrs={"cell": cell, "record": record, **attrs}))


def enqueue_missing(study, cells):
    """Enqueue each cell that no trial is waiting for, training, or has finished."""
    taken = [t.user_attrs["cell"] for t in study.get_trials(deepcopy=False)
             if "cell" in t.user_attrs and t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)]
    for cell in cells:
        if not any(same(cell, other) for other in taken):
            study.enqueue_trial({}, user_attrs={"cell": cell})


def owner(study, cell):
    """The trial that trains `cell`: the finished one, else the earliest made of those waiting
    or running. (Of two enqueued at the same moment by two workers, the later one made steps
    aside, whichever of them a worker takes first.)"""
    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
    claims = [t for t in study.get_trials(deepcopy=False, states=live) if same(t.user_attrs.get("cell"), cell)]
    return min(claims, key=lambda t: (t.state != TrialState.COMPLETE, t.number)).number


def poll_seconds(heartbeat):
    """How long a worker with nothing to run waits before it looks again: a quarter of a
    heartbeat (a cell another worker finishes is taken up soon after), at most 5 seconds."""
    return min(5, heartbeat / 4)


def work(study, cells_for, train, poll=5, wait=True):
    """Train cells until none is waiting or (with `wait`) being trained by anyone.

    cells_for(records) -> every cell the sweep needs, given the records finished so far (a
    cell can depend on another's record); train(cell) -> (objective value, record).
    An error in train() fails its trial and is raised: the worker stops, and the cell is
    enqueued again by the next worker to start."""
    def objective(trial):
        cell = trial.user_attrs.get("cell")
        if cell is None:  # another worker took the last waiting cell between our look and our ask
            trial.set_user_attr("skipped", "no waiting cell")
            raise optuna.TrialPruned()
        first = owner(study, cell)
        if first != trial.number:  # two workers enqueued the same cell at the same moment
            trial.set_user_attr("skipped", f"trial {first} trains this cell")
            raise optuna.TrialPruned()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        value, record = train(cell)
        trial.set_user_attr("record", record)
        return value

    enqueue_missing(study, cells_for(records(study)))
    for run_now in turns(study, poll, wait=wait):
        if run_now:  # Optuna: heartbeat, stale-trial retry, and errors re-raised
            with quietly():
                study.optimize(objective, n_trials=1)
        enqueue_missing(study, cells_for(records(study)))  # a cell can wait for a record just finished


def trials_before(study, number):
    """How many trials made before trial `number` are running or finished with a record."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
               if t.number < number and (t.state == TrialState.RUNNING or "record" in t.user_attrs))


def search(study, n_trials, train, poll=5):
    """Let the study's sampler choose and train trials until it holds n_trials
    finished ones, whichever workers trained them.

    train(trial, name) -> (objective value or values, record): `trial` suggests the
    hyperparameters; `name` names the run folder, kept by the retry of a stopped or vanished
    worker's trial so that it continues there with the same hyperparameters."""
    def objective(trial):
        me = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        # set on the retry of a vanished worker's trial (by Optuna) or of a stopped one (below)
        first = me.system_attrs.get("failed_trial", me.user_attrs.get("continues"))
        if first is None and trials_before(study, trial.number) >= n_trials:
            # another worker started the last one between our look and our ask: the same count for every study
            trial.set_user_attr("skipped", "the study has its trials")
            raise optuna.TrialPruned()
        first = trial.number if first is None else first
        try:
            values, record = train(trial, f"trial{first}")
        except (Interrupted, KeyboardInterrupt):  # stopped: the next worker continues it, not a new one
            study.enqueue_trial(trial.params, user_attrs={"continues": first})
            raise
        trial.set_user_attr("record", record)
        return values

    def start_another(states):
        return len(finished(study)) + states.count(TrialState.RUNNING) < n_trials

    for run_now in turns(study, poll, start_another):
        if run_now:  # Optuna: heartbeat, stale-trial retry, and errors re-raised
            with quietly():
                study.optimize(objective, n_trials=1)


def turns(study, poll, start_another=lambda states: False, wait=True):
    """A worker's turns: yields True where it is to run a trial now (one waits, or
    `start_another` says so), False after it waited while other workers ran theirs (failing any
    whose worker vanished, which enqueues it again); ends once there is nothing left to run or
    wait for. The caller runs the trial: Optuna calls its objective from the caller's loop."""
    while True:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if TrialState.WAITING in states or start_another(states):
            yield True
        elif wait and TrialState.RUNNING in states:
            time.sleep(poll)
            with quietly():
                optuna.storages.fail_stale_trials(study)
            yield False
        else:
            return
