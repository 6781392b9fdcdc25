import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import train_phase2  # noqa: E402


def run(tmp_path, *flags, out="PAI"):
    """main() of train_phase2 on `flags`, inside tmp_path; returns (result, args)."""
    args = train_phase2.parse_args(["--out", str(tmp_path / out), *flags])
    return train_phase2.main(args), args


def captured_run(tmp, *flags):
    """run() with its printed log captured; returns what the tests read."""
    started = os.path.getmtime(tmp)
    capture = tmp / "log.txt"
    with open(capture, "w") as log:
        saved, sys.stdout = sys.stdout, log
        try:
            result, args = run(tmp, "--quick", *flags)
        finally:
            sys.stdout = saved
    return {"result": result, "out": tmp / "PAI", "log": capture.read_text(), "started": started}


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One real dendritic --quick run on digits, shared by the tests that only read it."""
    return captured_run(tmp_path_factory.mktemp("quick"))


@pytest.fixture(scope="session")
def rescnn_run(tmp_path_factory):
    """The same with --model rescnn: the BatchNorm residual CNN."""
    return captured_run(tmp_path_factory.mktemp("rescnn"), "--model", "rescnn")


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

    import precision

    if "bf16" not in precision.available(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")
    return captured_run(tmp_path_factory.mktemp("bf16"), "--precision", "bf16")
