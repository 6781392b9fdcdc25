"""The layout's rules: imports only go down (model.py, then the package, then the demo, then
the experiments), and the demo loads an optional library only when a flag asks for it."""
import ast
import subprocess
import sys

import pytest

from conftest import ROOT

# experiments/ that are commands (python -m experiments.<name>), not shared code: those with a __main__
COMMANDS = {p.stem for p in (ROOT / "experiments").glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}


def imported(path):
    """The top-level names of every module `path` imports, anywhere in it (relative: the package's)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("neuroshrink" if node.level else node.module)
            if node.module == "experiments" or (node.level and node.module is None):
                names |= {f"{'neuroshrink' if node.level else 'experiments'}.{a.name}" for a in node.names}
            elif node.module and node.module.startswith("experiments."):
                names.add(node.module)
    return names


def top(names):
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("path", sorted((ROOT / "neuroshrink").glob("*.py")), ids=lambda p: p.name)
def test_the_package_imports_nothing_above_it(path):
    assert not top(imported(path)) & {"train_phase2", "experiments"}


def test_model_py_knows_nothing_of_the_library_or_the_project():
    assert top(imported(ROOT / "model.py")) <= {"torch"}


def test_the_demo_never_imports_the_experiments():
    assert "experiments" not in top(imported(ROOT / "train_phase2.py"))


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.py")), ids=lambda p: p.name)
def test_an_experiment_never_imports_another_experiments_command(path):
    reached = {name.split(".")[1] for name in imported(path) if name.startswith("experiments.")}
    assert not reached & COMMANDS - {path.stem}


def test_the_demo_loads_optional_libraries_only_when_asked(tmp_path):
    """A plain run loads no perforatedai; neither run loads torch-pruning, Optuna or wandb."""
    optional = ("perforatedai", "torch_pruning", "optuna", "wandb")
    script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import train_phase2
from neuroshrink.config import RunConfig
for plain in (True, False):
    out = {str(tmp_path)!r} + "/run" + str(plain)
    train_phase2.run(RunConfig(quick=True, epochs=2, graph_at_end=True, no_export=True, no_dendrites=plain), out)
    print("loaded:", sorted(name for name in {optional!r} if name in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = [line for line in done.stdout.splitlines() if line.startswith("loaded:")]
    assert loaded == ["loaded: []", "loaded: ['perforatedai']"]
