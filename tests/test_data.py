"""neuroshrink/data.py: fixed splits, normalisation, the IDX reader and its failures."""
import gzip

import numpy as np
import pytest
import torch

from conftest import make_fashion, write_idx
from neuroshrink import data


def test_splits_partition_the_data_and_are_fixed():
    labels = np.repeat(np.arange(10), 50)
    parts = data.split_indices(labels, 0.2, 0.2)
    joined = np.concatenate(parts)
    assert sorted(joined) == list(range(500))                      # cover, no overlap
    assert [len(p) for p in parts] == [300, 100, 100]
    again = data.split_indices(labels, 0.2, 0.2)
    assert all((a == b).all() for a, b in zip(parts, again))       # same every time
    assert all(np.bincount(labels[p]).min() == np.bincount(labels[p]).max() for p in parts)  # stratified


def test_digits_load_offline_as_pixels_normalised_a_batch_at_a_time_and_disjoint():
    splits = data.load("digits")
    assert sum(splits.sizes().values()) == 1797
    assert (splits.in_channels, splits.image_size, splits.num_classes) == (1, 8, 10)
    assert splits.train[0].dtype == torch.uint8 and int(splits.train[0].max()) == 16  # the digits' own values
    x = splits.normalise(splits.train[0])
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-2
    rows = {tuple(r.tolist()) for part in (splits.train, splits.val) for r in part[0].flatten(1)}
    test_rows = [tuple(r.tolist()) for r in splits.test[0].flatten(1)]
    overlap = sum(r in rows for r in test_rows)
    assert overlap <= 3  # digits holds a few duplicate images; splitting never reuses an index


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_in_the_real_format_load(tmp_path, gz):
    arrays = make_fashion(tmp_path, gz)
    splits = data.load("fashion-mnist", tmp_path)
    assert splits.sizes() == {"train": 90, "val": 10, "test": 20}  # the test set is kept whole
    assert splits.test[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    train_idx, val_idx, _ = data.split_indices(arrays["train-labels-idx1-ubyte"], data.VAL_FRACTION)
    train_raw = torch.tensor(arrays["train-images-idx3-ubyte"][train_idx], dtype=torch.float32)
    test_raw = torch.tensor(arrays["t10k-images-idx3-ubyte"], dtype=torch.float32)
    expected = ((test_raw - train_raw.mean()) / train_raw.std()).unsqueeze(1)  # (20, 1, 28, 28)
    assert torch.equal(splits.test[0], test_raw.unsqueeze(1).to(torch.uint8))  # held as the files' pixels
    assert torch.allclose(splits.normalise(splits.test[0]), expected, atol=1e-4)
    assert splits.val[1].tolist() == arrays["train-labels-idx1-ubyte"][val_idx].tolist()


def test_a_built_in_set_is_read_once_per_process_and_each_caller_gets_its_own_copy(tmp_path, monkeypatch):
    """A sweep's worker loads its data for every run: read and split once, as long as the files
    stay as they were."""
    read, reads = data.read_idx, []
    monkeypatch.setattr(data, "read_idx", lambda path: reads.append(path) or read(path))
    make_fashion(tmp_path, gz=True)
    first = data.load("fashion-mnist", tmp_path)
    first.train[0].add_(1)  # a caller's change stays its own
    again = data.load("fashion-mnist", tmp_path)
    assert len(reads) == 4 and torch.equal(first.train[0] - 1, again.train[0])
    make_fashion(tmp_path, gz=True, n_test=30)  # the files changed: read again
    assert data.load("fashion-mnist", tmp_path).sizes()["test"] == 30 and len(reads) == 8


def test_read_idx_matches_the_written_array(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x", array, gz=True)
    assert (data.read_idx(tmp_path / "x.gz") == array).all()


@pytest.mark.parametrize("damage", ["truncated", "not idx", "bad gzip"])
def test_damaged_idx_file_is_a_clear_error(tmp_path, damage):
    make_fashion(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes({"truncated": gzip.compress(payload[:1000]),
                      "not idx": gzip.compress(b"hello world, not an idx file"),
                      "bad gzip": path.read_bytes()[:50]}[damage])
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz"):
        data.load("fashion-mnist", tmp_path)


def test_missing_file_without_network_is_a_clear_error(tmp_path, no_network):
    make_fashion(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="could not be downloaded.*dataset-fashion-mnist"):
        data.load("fashion-mnist", tmp_path)


def test_missing_folder_and_unknown_dataset(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("fashion-mnist", tmp_path / "nope")
    with pytest.raises(data.DataError, match="choose from digits, mnist, fashion-mnist, cifar10"):
        data.load("imagenet")
