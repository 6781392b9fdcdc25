"""The layout's rules: imports only go down (model.py, then the package, then the demo, then
the experiments), and the demo loads an optional library only when a flag asks for it."""
import ast
import subprocess
import sys

import pytest

from conftest import ROOT

# Where a file of experiments/ sits says what it is: a file there with a __main__ is a command, a folder
# with a __main__.py a command of several files (python -m experiments.<name> either way), and
# experiments/common/ what they share.
EXPERIMENTS = ROOT / "experiments"
COMMANDS = ({p.stem for p in EXPERIMENTS.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}
            | {p.parent.name for p in EXPERIMENTS.glob("*/__main__.py")})
EXPERIMENT_FILES = sorted(EXPERIMENTS.rglob("*.py"))


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


def test_every_file_of_experiments_is_a_command_or_shared_or_a_commands_own():
    assert {"shrink", "width_sweep", "search"} <= COMMANDS
    for path in EXPERIMENT_FILES:
        place = path.relative_to(EXPERIMENTS).parts
        assert (len(place) == 1 and (path.stem in COMMANDS or path.name == "__init__.py")
                or place[0] == "common" or place[0] in COMMANDS), path


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_an_experiment_never_imports_another_experiments_command(path):
    own = path.relative_to(EXPERIMENTS).parts[0].removesuffix(".py")
    reached = {name.split(".")[1] for name in imported(path) if name.startswith("experiments.")}
    assert not reached & COMMANDS - {own}
    if own == "common":  # what the commands share imports none of them
        assert reached <= {"common"}, reached


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
