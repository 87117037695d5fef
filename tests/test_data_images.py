"""Tests for rsa_jax.data.images (no network, fast)."""

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from rsa_jax.data import images as im


def _raw_members(archive):
    """Reads the pickled batches straight from the tar, independently of the loader."""
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name] = pickle.load(tar.extractfile(m), encoding="bytes")
    return out


@pytest.fixture
def fake_archive(tmp_path):
    d = tmp_path / "cifar"
    d.mkdir()
    return im.make_fake_cifar10_archive(d / "fake.tar.gz", n_train_per_batch=6, n_test=4, seed=1)


def test_fake_archive_format(fake_archive):
    raw = _raw_members(fake_archive)
    names = {f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)}
    assert names | {"cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"} == set(raw)
    b = raw["cifar-10-batches-py/data_batch_1"]
    assert b[b"data"].dtype == np.uint8 and b[b"data"].shape == (6, 3072)
    assert len(raw["cifar-10-batches-py/batches.meta"][b"label_names"]) == 10


def test_fake_archive_round_trip_layout(fake_archive):
    raw = _raw_members(fake_archive)
    train = im.load_cifar10(fake_archive.parent / "fake.tar.gz", "train", verify=False)
    test = im.load_cifar10(fake_archive, "test", verify=False)
    assert train.images.shape == (30, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.shape == (30,) and train.labels.dtype == np.int32
    assert test.images.shape == (4, 32, 32, 3)
    assert train.classes == im.CIFAR10_CLASSES
    # Row-major CHW: flat index c*1024 + y*32 + x  <->  image[y, x, c].
    flat = raw["cifar-10-batches-py/data_batch_2"][b"data"]
    for (i, y, x, c) in [(0, 0, 0, 0), (1, 0, 31, 1), (2, 31, 0, 2), (5, 7, 19, 1)]:
        assert train.images[6 + i, y, x, c] == flat[i, c * 1024 + y * 32 + x]
    np.testing.assert_array_equal(
        test.labels, raw["cifar-10-batches-py/test_batch"][b"labels"])


def test_known_image_orientation(tmp_path):
    # A hand-written batch: red increases down rows, green across columns, blue constant.
    y, x = np.mgrid[0:32, 0:32]
    hwc = np.stack([y * 8, x * 8, np.full_like(y, 200)], -1).astype(np.uint8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": hwc.transpose(2, 0, 1).reshape(1, 3072), b"labels": [3]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [c.encode() for c in im.CIFAR10_CLASSES]}, protocol=2))
    ds = im.load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(ds.images[0], hwc)
    assert ds.labels.tolist() == [3]
    assert len(im.load_cifar10(folder, "train")) == 5  # the folder itself also works


def test_extracted_folder(fake_archive, tmp_path):
    out = tmp_path / "extracted"
    with tarfile.open(fake_archive, "r:gz") as tar:
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(out, **kw)
    a = im.load_cifar10(fake_archive, "train", verify=False)
    b = im.load_cifar10(out, "train")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_verify_official_name_wrong_content(tmp_path):
    path = im.make_fake_cifar10_archive(tmp_path, n_train_per_batch=2, n_test=2)
    assert path.name == "cifar-10-python.tar.gz"
    with pytest.raises(ValueError, match="MD5"):
        im.load_cifar10(tmp_path, "test", verify=True)
    assert len(im.load_cifar10(tmp_path, "test", verify=False)) == 2


def test_env_var_and_missing_message(tmp_path, monkeypatch):
    monkeypatch.setenv(im.CIFAR10_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        im.load_cifar10(split="train")
    msg = str(e.value)
    for part in (im.CIFAR10_URL, im.CIFAR10_ENV, "--data-dir", "tfds", "nowhere"):
        assert part in msg
    im.make_fake_cifar10_archive(tmp_path, n_train_per_batch=1, n_test=3)
    monkeypatch.setenv(im.CIFAR10_ENV, str(tmp_path))
    assert len(im.load_images("cifar10", "test", verify=False)) == 3


def test_bad_split_and_name(tmp_path):
    with pytest.raises(ValueError):
        im.load_cifar10(tmp_path, "valid")
    with pytest.raises(ValueError):
        im.load_images("mnist", "train")


def test_tfds_optional():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"rsa_jax\[tfds\]"):
            im.load_cifar10_tfds(None, "train")
    else:
        pytest.skip("tensorflow_datasets installed; loading needs prepared data")


# ----------------------------------------------------------------------------- Fashion-MNIST

def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_parser(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv(im.FASHION_MNIST_ENV, str(tmp_path))
    ds = im.load_images("fashion_mnist", "test")
    assert ds.images.shape == (5, 28, 28, 1) and ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.images[..., 0], imgs)
    np.testing.assert_array_equal(ds.labels, labels)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        im.load_fashion_mnist(tmp_path, "train")


@pytest.mark.skipif(not Path(im.FASHION_MNIST_DEFAULT_DIR, "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian(monkeypatch):
    monkeypatch.delenv(im.FASHION_MNIST_ENV, raising=False)
    ds = im.load_fashion_mnist(split="test")
    assert ds.images.shape == (10000, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10000,) and ds.labels.min() == 0 and ds.labels.max() == 9
    assert np.bincount(ds.labels).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- preprocessing

@pytest.fixture
def batch():
    return np.random.default_rng(3).integers(0, 256, (16, 8, 10, 3), dtype=np.uint8)


def test_flip_twice_identity(batch):
    once = im.random_flip(batch, np.random.default_rng(5))
    assert not np.array_equal(once, batch)
    np.testing.assert_array_equal(im.random_flip(once, np.random.default_rng(5)), batch)
    for a, b in zip(once, batch):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])


def test_crop(batch):
    np.testing.assert_array_equal(im.random_crop(batch, np.random.default_rng(0), padding=0), batch)
    out = im.random_crop(batch, np.random.default_rng(1), padding=2)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    off = np.random.default_rng(1).integers(0, 5, size=(16, 2))  # same draws as random_crop
    padded = np.pad(batch, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in (0, 7, 15):
        dy, dx = off[i]
        np.testing.assert_array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 10])
    np.testing.assert_array_equal(out, im.random_crop(batch, np.random.default_rng(1), padding=2))


def test_augment_deterministic(batch):
    a = im.augment(batch, np.random.default_rng(7))
    b = im.augment(batch, np.random.default_rng(7))
    c = im.augment(batch, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == batch.shape


def test_normalize_and_stats(batch):
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    out = im.normalize(batch, mean, std)
    assert out.dtype == np.float32
    manual = (batch[..., 1].astype(np.float64) / 255 - 0.5) / 0.3
    np.testing.assert_allclose(out[..., 1], manual, rtol=1e-5, atol=1e-5)
    m, s = im.channel_stats(batch, chunk=5)
    x = batch.astype(np.float64) / 255
    np.testing.assert_allclose(m, x.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(s, x.std(axis=(0, 1, 2)), atol=1e-6)
    z = im.normalize(batch, m, s)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-5)


def test_batch_iterator(batch):
    labels = np.arange(16, dtype=np.int32)
    ds = im.ImageSet(batch, labels, "toy", tuple("abcdefghijklmnop"))
    batches = list(im.batch_iterator(ds, 4, seed=0, epoch=0))
    assert len(batches) == 4
    assert all(b["image"].shape == (4, 8, 10, 3) and b["image"].dtype == np.float32 for b in batches)
    assert all(b["label"].dtype == np.int32 for b in batches)
    seen = np.concatenate([b["label"] for b in batches])
    assert sorted(seen.tolist()) == list(range(16))
    np.testing.assert_allclose(batches[0]["image"], batch[batches[0]["label"]] / 255.0, atol=1e-6)
    again = np.concatenate([b["label"] for b in im.batch_iterator(ds, 4, 0, 0)])
    other = np.concatenate([b["label"] for b in im.batch_iterator(ds, 4, 0, 1)])
    np.testing.assert_array_equal(seen, again)
    assert not np.array_equal(seen, other)
    assert len(list(im.batch_iterator(ds, 5, 0, 0))) == 3
    assert [len(b["label"]) for b in im.batch_iterator(ds, 5, 0, 0, drop_last=False)] == [5, 5, 5, 1]
    aug1 = [b["image"] for b in im.batch_iterator(ds, 8, 1, 2, augment=True, mean=[.5] * 3, std=[.25] * 3)]
    aug2 = [b["image"] for b in im.batch_iterator(ds, 8, 1, 2, augment=True, mean=[.5] * 3, std=[.25] * 3)]
    np.testing.assert_array_equal(np.stack(aug1), np.stack(aug2))


def test_cifar_default_normalization(fake_archive):
    ds = im.load_cifar10(fake_archive, "test", verify=False)
    b = next(im.batch_iterator(ds, 4, seed=0, epoch=0))  # the whole (permuted) test split
    expect = im.normalize(ds.images, im.CIFAR10_MEAN, im.CIFAR10_STD)
    np.testing.assert_allclose(np.sort(b["image"].ravel()), np.sort(expect.ravel()), atol=1e-6)
