"""Image data sets as NumPy arrays: CIFAR-10, Fashion-MNIST, and augmentation.

Nothing here touches the network. CIFAR-10 is read from the official
``cifar-10-python.tar.gz`` (or its extracted ``cifar-10-batches-py/`` folder),
optionally through ``tensorflow_datasets``; Fashion-MNIST is read from the IDX
files shipped by the Debian package ``dataset-fashion-mnist``.

Images are always ``uint8`` with shape ``(n, H, W, C)`` (channels last); the
batch iterator turns them into normalized ``float32``.

Note: CIFAR-10 batches are Python pickles; only load archives you trust.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ENV = "RSA_JAX_CIFAR10_DIR"
CIFAR10_DEFAULT_DIR = "~/.cache/rsa_jax/cifar10"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], np.float32)

FASHION_MNIST_ENV = "RSA_JAX_FASHION_MNIST_DIR"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot")
FASHION_MNIST_MEAN = np.array([0.2860], np.float32)
FASHION_MNIST_STD = np.array([0.3530], np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image set held in memory.

    Attributes:
        images: ``uint8`` array of shape ``(n, H, W, C)``.
        labels: ``int32`` array of shape ``(n,)``.
        name: Data set name, e.g. ``"cifar10"``.
        classes: Class names; ``labels`` index into this tuple.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    classes: tuple[str, ...]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (n, H, W, C), got "
                             f"{self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {self.labels.shape} does not match "
                             f"{self.images.shape[0]} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- CIFAR-10

def _cifar10_missing(data_dir: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 not found in {data_dir}.\n"
        f"  Download {CIFAR10_URL} (163 MB) on a machine with network access and\n"
        f"  put it at {data_dir / CIFAR10_ARCHIVE} (or extract it there so that\n"
        f"  {data_dir / CIFAR10_FOLDER}/data_batch_1 exists).\n"
        f"  Choose another folder with the env var {CIFAR10_ENV}=/path or the\n"
        f"  --data-dir flag of the experiment scripts (default {CIFAR10_DEFAULT_DIR}).\n"
        f"  Alternative: `pip install rsa_jax[tfds]`, prepare 'cifar10' with\n"
        f"  tensorflow-datasets, and use load_images('cifar10_tfds', ...).")


def _decode_cifar_batch(d: dict) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
    return data.transpose(0, 2, 3, 1), np.asarray(d[b"labels"], np.int32)


def load_cifar10(data_dir: str | os.PathLike | None = None, split: str = "train",
                 verify: bool = True) -> ImageSet:
    """Loads CIFAR-10 from the official python archive or its extracted folder.

    Args:
        data_dir: Folder holding ``cifar-10-python.tar.gz`` or
            ``cifar-10-batches-py/`` (or a path to the archive itself). Defaults
            to ``$RSA_JAX_CIFAR10_DIR``, then ``~/.cache/rsa_jax/cifar10``.
        split: ``"train"`` (50000 images) or ``"test"`` (10000 images).
        verify: Check the MD5 of a file named ``cifar-10-python.tar.gz``.

    Returns:
        ImageSet with images ``uint8 (n, 32, 32, 3)`` and labels ``int32 (n,)``.

    Raises:
        FileNotFoundError: No data found (the message says how to get it).
        ValueError: Bad split, or checksum mismatch with ``verify=True``.
    """
    _check_split(split)
    root = Path(data_dir or os.environ.get(CIFAR10_ENV) or CIFAR10_DEFAULT_DIR).expanduser()
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    names.append("batches.meta")
    folder = root if root.name == CIFAR10_FOLDER else root / CIFAR10_FOLDER
    archive = root if root.is_file() else root / CIFAR10_ARCHIVE

    raw: dict[str, dict] = {}
    if folder.is_dir() and (folder / names[0]).is_file():
        for n in names:
            with open(folder / n, "rb") as f:
                raw[n] = pickle.load(f, encoding="bytes")
    elif archive.is_file():
        if verify and archive.name == CIFAR10_ARCHIVE:
            got = _md5(archive)
            if got != CIFAR10_MD5:
                raise ValueError(
                    f"MD5 mismatch for {archive}: expected {CIFAR10_MD5}, got {got}. "
                    f"The file is corrupt or not the official archive; re-download "
                    f"{CIFAR10_URL}, or pass verify=False for a custom archive.")
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # one sequential pass over the gzip stream
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names:
                    raw[base] = pickle.load(tar.extractfile(member), encoding="bytes")
        missing = [n for n in names if n not in raw]
        if missing:
            raise ValueError(f"{archive} lacks CIFAR-10 members {missing}")
    else:
        raise _cifar10_missing(root)

    parts = [_decode_cifar_batch(raw[n]) for n in names[:-1]]
    classes = tuple(c.decode() if isinstance(c, bytes) else str(c)
                    for c in raw["batches.meta"].get(b"label_names", CIFAR10_CLASSES))
    return ImageSet(np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts]), "cifar10", classes)


def load_cifar10_tfds(data_dir: str | os.PathLike | None = None,
                      split: str = "train") -> ImageSet:
    """Loads CIFAR-10 prepared by ``tensorflow_datasets`` (never downloads).

    Args:
        data_dir: tfds data folder (``None``: the tfds default).
        split: Any tfds split string, e.g. ``"train"`` or ``"test[:10%]"``.

    Returns:
        ImageSet with images ``uint8 (n, 32, 32, 3)`` and labels ``int32 (n,)``.

    Raises:
        ImportError: ``tensorflow_datasets`` is not installed.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("load_cifar10_tfds needs tensorflow-datasets: "
                          "`pip install rsa_jax[tfds]`") from e
    ds = tfds.load("cifar10", split=split, data_dir=None if data_dir is None else str(data_dir),
                   batch_size=-1, download=False)
    ds = tfds.as_numpy(ds)
    return ImageSet(np.asarray(ds["image"], np.uint8), np.asarray(ds["label"], np.int32),
                    "cifar10", CIFAR10_CLASSES)


def make_fake_cifar10_archive(path: str | os.PathLike, n_train_per_batch: int = 20,
                              n_test: int = 20, seed: int = 0) -> Path:
    """Writes a small random archive in exactly the official CIFAR-10 format.

    The archive is a gzipped tar with top folder ``cifar-10-batches-py/``
    holding ``data_batch_1..5``, ``test_batch`` and ``batches.meta``: pickles
    (protocol 2, bytes keys) whose ``b'data'`` is ``uint8 (n, 3072)`` in
    row-major CHW order. Load it with ``load_cifar10(..., verify=False)``.

    Args:
        path: Output file, or an existing folder (writes
            ``cifar-10-python.tar.gz`` inside it).
        n_train_per_batch: Images in each of the five training batches.
        n_test: Images in the test batch.
        seed: Seed of the random pixels and labels.

    Returns:
        Path of the written archive.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CIFAR10_ARCHIVE
    rng = np.random.default_rng(seed)

    def batch(n: int, label: str) -> dict:
        hwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        return {b"batch_label": label.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                b"data": hwc.transpose(0, 3, 1, 2).reshape(n, 3072).copy(),
                b"filenames": [f"fake_{i}.png".encode() for i in range(n)]}

    members = {f"data_batch_{i}": batch(n_train_per_batch, f"training batch {i} of 5")
               for i in range(1, 6)}
    members["test_batch"] = batch(n_test, "testing batch 1 of 1")
    members["batches.meta"] = {b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                               b"num_cases_per_batch": n_train_per_batch, b"num_vis": 3072}
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        d = tarfile.TarInfo(CIFAR10_FOLDER)
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{CIFAR10_FOLDER}/{name}")
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return path


# ----------------------------------------------------------------------------- Fashion-MNIST

def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (``.gz`` or plain) of unsigned bytes into an array."""
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        buf = f.read()
    if buf[:2] != b"\x00\x00" or buf[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {buf[:4].hex()})")
    ndim = buf[3]
    shape = tuple(int(s) for s in np.frombuffer(buf, ">u4", ndim, offset=4))
    return np.frombuffer(buf, np.uint8, int(np.prod(shape)), offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None,
                       split: str = "train") -> ImageSet:
    """Loads Fashion-MNIST from its four IDX files.

    Args:
        data_dir: Folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
            Defaults to ``$RSA_JAX_FASHION_MNIST_DIR``, then the Debian path
            ``/usr/share/datasets/fashion-mnist``.
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).

    Returns:
        ImageSet with images ``uint8 (n, 28, 28, 1)`` and labels ``int32 (n,)``.

    Raises:
        FileNotFoundError: Files missing (the message says how to get them).
    """
    _check_split(split)
    root = Path(data_dir or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_DIR)
    prefix = "train" if split == "train" else "t10k"
    paths = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        found = [p for p in (root / f"{stem}.gz", root / stem) if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST file {stem}.gz not found in {root}. Install it with "
                f"`apt-get install dataset-fashion-mnist` (files land in "
                f"{FASHION_MNIST_DEFAULT_DIR}), or put train-images-idx3-ubyte.gz, "
                f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                f"t10k-labels-idx1-ubyte.gz in a folder named by data_dir or "
                f"${FASHION_MNIST_ENV}.")
        paths.append(found[0])
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    return ImageSet(images[..., None].copy(), labels.astype(np.int32), "fashion_mnist",
                    FASHION_MNIST_CLASSES)


def load_images(name: str, split: str = "train",
                data_dir: str | os.PathLike | None = None, **kw) -> ImageSet:
    """Loads ``name`` in {'cifar10', 'cifar10_tfds', 'fashion_mnist'}; ``kw`` go to the loader."""
    loaders = {"cifar10": load_cifar10, "cifar10_tfds": load_cifar10_tfds,
               "fashion_mnist": load_fashion_mnist}
    if name not in loaders:
        raise ValueError(f"unknown image data set {name!r}; choose from {sorted(loaders)}")
    return loaders[name](data_dir=data_dir, split=split, **kw)


# ----------------------------------------------------------------------------- preprocessing

def _to_unit(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Per-channel ``(x - mean) / std`` with ``uint8`` scaled to ``[0, 1]`` first.

    Args:
        images: ``(..., C)`` array, ``uint8`` (scaled by 1/255) or float.
        mean: ``(C,)`` channel means on the ``[0, 1]`` scale.
        std: ``(C,)`` channel standard deviations on the ``[0, 1]`` scale.

    Returns:
        ``float32`` array of the same shape.
    """
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (_to_unit(images) - mean) / std


def channel_stats(images: np.ndarray, chunk: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std on the ``[0, 1]`` scale of ``(n, H, W, C)`` images.

    Returns:
        ``(mean, std)``, each ``float32 (C,)``.
    """
    s = s2 = 0.0
    for i in range(0, len(images), chunk):
        x = _to_unit(images[i:i + chunk]).astype(np.float64)
        s = s + x.sum(axis=(0, 1, 2))
        s2 = s2 + (x * x).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = s / count
    return mean.astype(np.float32), np.sqrt(np.maximum(s2 / count - mean ** 2, 0)).astype(np.float32)


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Zero-pads by ``padding`` and crops a random ``H x W`` window per image.

    Args:
        images: ``(n, H, W, C)`` array.
        rng: Source of the ``(n, 2)`` offsets, each in ``[0, 2 * padding]``.
        padding: Pixels of zero padding on every side.

    Returns:
        Array with the shape and dtype of ``images``.
    """
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    off = rng.integers(0, 2 * padding + 1, size=(n, 2))
    rows = off[:, 0, None] + np.arange(h)  # (n, H)
    cols = off[:, 1, None] + np.arange(w)  # (n, W)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flips each ``(n, H, W, C)`` image left-right with probability 1/2."""
    flip = rng.random(images.shape[0]) < 0.5
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def augment(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Standard CIFAR augmentation: :func:`random_crop` then :func:`random_flip`."""
    return random_flip(random_crop(images, rng, padding), rng)


def _default_stats(name: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    if name.startswith("cifar10") and channels == 3:
        return CIFAR10_MEAN, CIFAR10_STD
    if name.startswith("fashion_mnist") and channels == 1:
        return FASHION_MNIST_MEAN, FASHION_MNIST_STD
    return np.zeros(channels, np.float32), np.ones(channels, np.float32)


def batch_iterator(ds: ImageSet, batch_size: int, seed: int, epoch: int,
                   augment: bool = False, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None,
                   drop_last: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Yields shuffled, optionally augmented, normalized batches for one epoch.

    The order and the augmentation depend only on ``(seed, epoch)``.

    Args:
        ds: The image set.
        batch_size: Examples per batch ``B``.
        seed: Base seed.
        epoch: Epoch index; each epoch gets its own permutation.
        augment: Apply :func:`augment` (crop with padding 4 and flip).
        mean: ``(C,)`` normalization means; ``None`` uses the data set's
            standard values (CIFAR-10, Fashion-MNIST) or 0 otherwise.
        std: ``(C,)`` normalization stds; ``None`` as for ``mean`` (or 1).
        drop_last: Drop the final incomplete batch.

    Yields:
        ``{'image': float32 (B, H, W, C), 'label': int32 (B,)}``.
    """
    d_mean, d_std = _default_stats(ds.name, ds.images.shape[-1])
    mean = d_mean if mean is None else mean
    std = d_std if std is None else std
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(ds))
    stop = len(ds) - len(ds) % batch_size if drop_last else len(ds)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        images = ds.images[idx]
        if augment:
            images = random_flip(random_crop(images, rng, 4), rng)
        yield {"image": normalize(images, mean, std), "label": ds.labels[idx].astype(np.int32)}
