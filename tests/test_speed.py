"""experiments/speed/: the benchmark runs every loop it compares (--quick: a few images, seconds).
Its numbers are printed, never asserted: only that each loop ran and said what it measured."""
import contextlib
import io
import re

import torch

from experiments import speed
from neuroshrink import precision


def test_the_speed_benchmark_runs_every_loop_it_compares(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        speed.main(speed.get_args_parser().parse_args(["--quick", "--precisions", "fp32"]))
    text = out.getvalue()
    train = float(re.search(r"\(a\) plain PyTorch loop: train ([\d.]+) s", text)[1])
    assert train > 0
    assert "[fp32] (b) demo --no-dendrites: train" in text
    sets = [int(k) for k in re.findall(r"^    (\d+) set\(s\), [\d,]+ params: train", text, re.M)]
    assert sets[0] == 0 and max(sets) >= 1  # the library's capacity test added dendrites: (c) before and after
    assert "full default run" not in text  # --quick leaves out the 16-second default run
    if "bf16" in precision.available(torch.device("cpu")):
        assert "bf16 autocast + channels-last" in text
