"""Shared fixtures and helpers: real runs made once per test session, the checks every
failure test makes, and tiny data written in the real formats."""
import contextlib
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import runpy
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# One torch thread per test process, and the processes it starts: the tests' tiny models gain
# nothing from a second thread, and pytest-xdist (-n auto, in pytest.ini) runs one process per core.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402

torch.set_num_threads(1)

# The library draws PAI.png, a 28 x 14 inch figure, at matplotlib's figure.dpi: 2800 x 1400 pixels
# at the default 100, 0.4-1 s a drawing here, the tests' largest cost after training. Most tests need
# the graph drawn, not its pixels: they and the processes they start draw it at 25 dpi (700 x 350)
# without tick labels (tests/matplotlibrc), in about a third of the time. The demo's run (quick_run)
# and the tests that check the library's own size draw it as the library does.
os.environ["MATPLOTLIBRC"] = str(ROOT / "tests" / "matplotlibrc")
import matplotlib  # noqa: E402

TESTS_GRAPHS = ("figure.dpi", "xtick.labelbottom", "ytick.labelleft", "xtick.bottom", "ytick.left")


def full_size_graphs():
    """Within it, graphs are drawn with matplotlib's defaults, as a user's are."""
    return matplotlib.rc_context({key: matplotlib.rcParamsDefault[key] for key in TESTS_GRAPHS})


import train_phase2  # noqa: E402

DIGITS = dict(in_channels=1, image_size=8, num_classes=10)  # a model factory's data arguments on digits
METRICS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "params", "dendrite_sets", "best")


def within_budget(params, budget):
    return abs(params - budget) <= 0.1 * budget


def files(folder):
    """Every file under `folder` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# Not an outcome of training: the clock, and an ONNX file's bytes (the library names a dendrite
# layer's scope "layers.0" in a process's first run and "0" in later ones: the same graph, other names).
NOT_OUTCOMES = ("wall_seconds", "timing_seconds", "inference_ms", "ort_ms", "torchscript_ms", "bytes")


def metrics(result):
    """What must be identical between two runs of the same seed: everything but the clock and
    the exported files' bytes."""
    def timeless(d):
        return {k: timeless(v) if isinstance(v, dict) else v for k, v in d.items() if k not in NOT_OUTCOMES}
    return [{k: row[k] for k in METRICS} for row in result["history"]], result["restructures"], timeless(result["final"])


def fails(argv, capsys, command=train_phase2.cli):
    """command(argv) (train_phase2.cli's) must exit non-zero with one line starting 'error:' and no traceback."""
    with pytest.raises(SystemExit) as exit_:
        command(argv)
    code = exit_.value.code
    message = code if isinstance(code, str) else capsys.readouterr().err
    assert code not in (0, None)
    assert message.strip().count("\n") == 0 and message.startswith("error:"), message
    assert "Traceback" not in message
    return message


def write_idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def make_fashion(folder, gz, n_train=100, n_test=20):
    """Fashion-MNIST's four IDX files, with random images, in `folder`."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def huge_header_png(path, width=20_000, height=20_000):
    """A 1 x 1 PNG whose header claims width x height pixels (a decompression bomb, or a damaged
    file), written to `path` (returned), or its bytes where path is None."""
    import io
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # and its checksum
    if path is None:
        return bytes(png)
    path.write_bytes(bytes(png))
    return path


def config(*flags):
    """The RunConfig of these flags, any setting's (python -m experiments.run's command line)."""
    from experiments.run import get_args_parser
    from neuroshrink.config import RunConfig
    from neuroshrink.options import config_of

    return RunConfig(**config_of(get_args_parser().parse_args(list(flags))))


def run(tmp_path, *flags, out="PAI"):
    """train_phase2.run() of `flags`, into tmp_path/out; returns (result, the config it trained with).
    In fp32 unless the flags name a precision: the tests compare runs of one seed, and what auto
    chooses is a timing, which may differ from one run to the next."""
    given = config(*flags, *([] if "--precision" in flags else ["--precision", "fp32"]))
    return train_phase2.run(given, tmp_path / out), given.resolved()


def sweep_run(args, cell, folder, **overrides):
    """One cell of a sweep as a sweep trains it (runner): its config, reused or trained in
    `folder`, and what the sweep records of it."""
    from experiments.common import runner

    return runner.cell_record(args, cell, folder, runner.run_in(runner.cell_config(args, cell, **overrides), folder))


@contextlib.contextmanager
def stopped_after(monkeypatch, epoch):
    """Inside it, a run is stopped by SIGINT right after `epoch` is saved (Interrupted)."""
    import signal

    from neuroshrink import run_folder

    save_epoch = run_folder.RunFolder.save_epoch

    def save_then_stop(self, row, *args):
        save_epoch(self, row, *args)
        if row["epoch"] == epoch:
            signal.raise_signal(signal.SIGINT)  # held until the epoch is safely saved
    with monkeypatch.context() as patch:  # undoes this patch only, not the caller's
        patch.setattr(run_folder.RunFolder, "save_epoch", save_then_stop)
        with pytest.raises(run_folder.Interrupted):
            yield


def stopped_then_resumed(tmp_path, monkeypatch, epoch, *flags):
    """A run of `flags` stopped right after `epoch` is saved, then --resume'd; returns the
    resumed run's result."""
    with stopped_after(monkeypatch, epoch):
        run(tmp_path, *flags)
    display = {"graph_at_end": True} if "--graph-at-end" in flags else {}  # not a run setting: given again
    return train_phase2.resume(tmp_path / "PAI", **display)


def built_once(tmp_path_factory, name, build):
    """The folder `name`, made by build(folder) once for the whole test session: pytest-xdist
    runs the tests in several processes, and each would otherwise train its own copy of a
    session fixture. The tests only read it (or copy it to change it)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's folder, shared by its worker processes
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (root / f"{name}.built").exists():
            if folder.exists():
                shutil.rmtree(folder)  # left by a process whose build failed
            folder.mkdir()
            (folder / "output.txt").write_text(build(folder))
            (root / f"{name}.built").touch()
    return folder


def shared_run(tmp_path_factory, name, *flags):
    """A --quick run of `flags` made once for the whole test session (built_once), as the
    tests read it: its record, run folder and printed log."""
    def build(folder):
        (folder / "started").touch()  # before the run: what it writes is newer
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run(folder, "--quick", *flags)
        return printed.getvalue()
    folder = built_once(tmp_path_factory, name, build)
    return {"result": json.loads((folder / "PAI" / "results.json").read_text()), "out": folder / "PAI",
            "log": (folder / "output.txt").read_text(), "started": os.path.getmtime(folder / "started")}


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One real dendritic --quick run on digits, shared by the tests that only read it."""
    with full_size_graphs():
        return shared_run(tmp_path_factory, "quick_run")


@pytest.fixture(scope="session")
def rescnn_run(tmp_path_factory):
    """The same with --model rescnn: the BatchNorm residual CNN."""
    return shared_run(tmp_path_factory, "rescnn_run", "--model", "rescnn")


def refuse_network(monkeypatch):
    """Make any socket use fail; returns the list the attempts are recorded in."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse(*args)

    monkeypatch.setattr(socket, "socket", NoSocket)
    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    return attempts


@pytest.fixture
def no_network(monkeypatch):
    return refuse_network(monkeypatch)


@pytest.fixture(scope="session")
def bf16_run(tmp_path_factory):
    """The quick run trained in bf16 autocast, where this CPU has bf16."""
    import torch

    from neuroshrink import precision

    if "bf16" not in precision.available(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")
    return shared_run(tmp_path_factory, "bf16_run", "--precision", "bf16")


# ---------------------------------------------------------------- commands in processes of their own

# The tests that stop or kill a command run it in a process of its own, forked from a server
# process that has already imported what every run imports (multiprocessing's forkserver): a
# fresh interpreter would spend 4-5 s of each such test importing torch, scikit-learn, Dynamo
# (which every torch optimizer loads), ONNX and the library. The process runs the command's
# file as `python FILE` or `python -m MODULE` does (runpy, as __main__), its own real process,
# signalled and killed for real. (Its command line itself: test_train_phase2's real process.)
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["train_phase2", "experiments.common.studies", "sklearn.model_selection",
                                   "torch._dynamo", "onnx", "onnxruntime", "perforatedai", "conftest"])


def as_command(argv, cwd, log):
    """In the new process: `python *argv` in `cwd`, everything it prints appended to `log`."""
    os.chdir(cwd)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)  # a line at a time, as python -u
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


class Command:
    """`python *argv` running in `cwd` in a process of its own (FORKSERVER); what it prints is in
    the file .log. As subprocess.Popen: poll(), wait(), returncode (-N: killed by signal N)."""

    def __init__(self, log, argv, cwd):
        self.log = log
        log.write_text("")  # read before the process prints anything
        self.process = FORKSERVER.Process(target=as_command, args=(list(argv), str(cwd), str(log)))
        self.process.start()

    def poll(self):
        return self.process.exitcode

    @property
    def returncode(self):
        return self.process.exitcode

    def send_signal(self, signum):
        os.kill(self.process.pid, signum)

    def kill(self):
        self.process.kill()

    def wait(self, timeout):
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            raise TimeoutError(f"{self.log}: still running after {timeout} s")
        return self.process.exitcode


# ---------------------------------------------------------------- sweeps

# One thread and fp32: the same numbers in every worker (auto's measurement may choose otherwise in each)
SWEEP = ["--quick", "--threads", "1", "--seeds", "1", "--heartbeat", "1", "--precision", "fp32"]


def sweep_flags(tmp, *flags):
    return [*SWEEP, "--results", str(tmp / "results"), "--runs", str(tmp / "runs"), *flags]


def sweep_worker(tmp, *flags):
    """A width-sweep process: one worker of the tiny sweep stored under tmp (unless --storage)."""
    return Command(tmp / f"worker-{len(list(tmp.glob('worker-*.log')))}.log",
                   ["-m", "experiments.width_sweep", *sweep_flags(tmp, *flags)], tmp)


def finish(worker):
    """Wait for a worker process, which must succeed; returns what it printed."""
    worker.wait(timeout=300)
    output = worker.log.read_text()
    assert worker.returncode == 0, output
    return output


def sweep_here(tmp, *flags, script="width_sweep"):
    """A worker of experiments/<script>.py in this process (no start-up cost); returns what
    it printed."""
    import importlib
    import io

    import torch

    module = importlib.import_module(f"experiments.{script}")
    threads, printed = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            module.main(module.get_args_parser().parse_args(sweep_flags(tmp, *flags)))
    finally:
        torch.set_num_threads(threads)  # --threads 1 must not slow the other tests
    return printed.getvalue()


def study_of(tmp, url=None):
    from experiments.common import studies

    return studies.open_study(url or f"sqlite:///{tmp / 'results' / 'digits' / 'sweep.db'}", "neuroshrink-digits")


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """The tiny grid (widths 0.25 and 0.125, seed 1, both methods) swept by a single worker."""
    from experiments.common import studies

    tmp = built_once(tmp_path_factory, "tiny_sweep", lambda folder: sweep_here(folder, "--widths", "0.25", "0.125"))
    return {"tmp": tmp, "results": tmp / "results" / "digits", "output": (tmp / "output.txt").read_text(),
            "records": studies.records(study_of(tmp))}
