"""neuroshrink/wandb_log.py: optional W&B logging, offline, never in the way."""
import sys

from PIL import Image

from conftest import fails, files, full_size_graphs, metrics, run


def test_wandb_offline_logs_history_restructures_and_the_graph(quick_run, tmp_path, monkeypatch):

    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    with full_size_graphs():
        result, _ = run(tmp_path, "--quick", "--wandb", "--graph-at-end")  # the graph: drawn once, at the end
    assert metrics(result) == metrics(quick_run["result"])  # logging changes nothing in training
    (offline,) = (tmp_path / "PAI" / "wandb").glob("offline-run-*")
    assert offline.name.endswith(result["wandb_id"])
    records = next(offline.glob("*.wandb")).read_bytes()
    for key in (b"val_acc", b"test_acc", b"dendrite_sets", b"restructure/kind", b"dendrites added"):
        assert key in records, key
    (image,) = offline.glob("files/media/images/PAI.png_*.png")
    with Image.open(image) as graph:
        assert graph.size == (2800, 1400)  # the library's own figure


def test_wandb_not_installed_is_a_one_line_error(quick_run, monkeypatch, capsys):

    monkeypatch.setitem(sys.modules, "wandb", None)  # any import of wandb now fails
    before = files(quick_run["out"])
    assert "--wandb needs the wandb package: pip install wandb" in fails(
        ["--out", str(quick_run["out"]), "--wandb"], capsys)
    assert files(quick_run["out"]) == before
