"""Image classification (paper B.6, Fig. S.2): looped ItrSA / AKOrN on patch tokens, CE at step T.

    cfg = VisionTrainConfig(dataset="fashion_mnist", model=VisionConfig(kind="itrsa", d=32, heads=4),
                            t_train=4, epochs=1, train_limit=512, out="runs/x")
    model, history = train(cfg, vision_task(cfg))          # rsa_jax.train.train
    model, cfg = load_model("runs/x")                        # VisionModel + VisionTrainConfig

``VisionTrainConfig`` is ``rsa_jax.train.TrainConfig`` with a :class:`VisionConfig` model and the
paper's CIFAR-10 defaults (batch 128, 200 epochs, D = 384, H = 8, T = 16; Adam, the rest as for
Sudoku), plus the data set. Keeping the model type in the config class lets ``load_model``
round-trip the whole configuration. The model's ``image_size`` and ``channels`` are set from the
data set (CIFAR-10 32 x 32 x 3, Fashion-MNIST 28 x 28 x 1).

Data: :mod:`rsa_jax.data.images` (``load_images``, ``batch_iterator``); the order (and
augmentation) of epoch ``e`` is fixed by ``(cfg.seed, e)``, so resumed runs are exact. Images are
normalized with the data set's channel statistics. Evaluation classifies the test split in
padded batches of ``eval_batch_size`` (one compilation) at ``T = t_train``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rsa_jax.data.images import ImageSet, batch_iterator, load_images
from rsa_jax.models.vision import VisionConfig, VisionModel
from rsa_jax.train import Task, TrainConfig

#: ``(image_size, channels)`` of each data set name accepted by ``load_images``.
DATASET_SHAPES = {"cifar10": (32, 3), "cifar10_tfds": (32, 3), "fashion_mnist": (28, 1)}


def _field(default, help: str):
    if callable(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class VisionTrainConfig(TrainConfig):
    """:class:`rsa_jax.train.TrainConfig` for image classification (paper B.6 defaults).

    ``model.image_size`` / ``model.channels`` are overwritten from ``dataset``.
    """

    model: VisionConfig = _field(lambda: VisionConfig(kind="akorn", d=384, heads=8),
                                 "model architecture (nested: --model-d, --model-heads, --model-patch, ...)")
    batch_size: int = _field(128, "training batch size")
    epochs: int = _field(200, "training epochs")
    dataset: str = _field("fashion_mnist", f"image data set: {' | '.join(DATASET_SHAPES)}")
    augment: bool = _field(False, "random crop (zero padding 4) and horizontal flip of training images")
    eval_batch_size: int = _field(500, "batch size of the test-set evaluation")
    eval_split: str = _field("test", "split evaluated by the task: 'test' or 'train'")

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.dataset not in DATASET_SHAPES:
            raise ValueError(f"dataset must be one of {sorted(DATASET_SHAPES)}, got {self.dataset!r}")
        size, ch = DATASET_SHAPES[self.dataset]
        if (self.model.image_size, self.model.channels) != (size, ch):
            object.__setattr__(self, "model", dataclasses.replace(self.model, image_size=size, channels=ch))


# ----------------------------------------------------------------------------------- loss
def vision_loss(model: VisionModel, batch: dict, key: jax.Array, steps: int, *, trajectory: bool = False):
    """Cross-entropy of the logits after ``steps`` updates, with the batch accuracy.

    Args:
      model: a :class:`VisionModel`.
      batch: ``image`` (B, H, W, C) float (normalized), ``label`` (B,) int.
      key: PRNG key of the initial state (used with ``init="noise"``).
      steps: T.
      trajectory: also put the visited states ``(T, B, S, D)`` in ``aux["trajectory"]`` (alias
        ``aux["xs"]``, the key ``rsa_jax.regularizers.JacobianPenalty`` reads).

    Returns:
      ``(loss, metrics)``: ``metrics`` has ``loss``, ``acc`` and ``aux = {"c", "x0", "x"}``
      (conditioning, initial and final state, each (B, S, D)) for penalties.
    """
    images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
    c, x0 = model.condition(images, key)
    x, aux = model.rollout_aux(c, x0, steps, trajectory=trajectory)
    logits = model.readout(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    acc = jnp.mean(jnp.argmax(logits, -1).astype(labels.dtype) == labels)
    return loss, {"loss": loss, "acc": acc, "aux": aux}


# ----------------------------------------------------------------------------- evaluation
@functools.partial(jax.jit, static_argnames=("graphdef", "steps"))
def _eval_batch(graphdef, state, images, labels, mask, key, steps: int):
    model = nnx.merge(graphdef, state)
    logits = model(images, key, steps)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    right = (jnp.argmax(logits, -1).astype(labels.dtype) == labels).astype(mask.dtype)
    return jnp.sum(right * mask), jnp.sum(ce * mask)


def evaluate_images(model: VisionModel, ds: ImageSet, steps: int, batch_size: int = 500,
                    key: Optional[jax.Array] = None) -> dict:
    """Test accuracy and mean cross-entropy of ``model`` on all of ``ds`` after ``steps`` updates.

    Batches are padded to ``batch_size`` (compiled once); batch ``b`` uses ``fold_in(key, b)``
    for the initial state (``init="noise"`` only).

    Returns:
      ``{"acc": float, "loss": float, "n": int}``.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    graphdef, state = nnx.split(model)
    bs = min(batch_size, len(ds))
    right = ce = 0.0
    for b, batch in enumerate(batch_iterator(ds, bs, seed=0, epoch=0, drop_last=False)):
        n = len(batch["label"])
        pad = lambda a: np.concatenate([a, np.repeat(a[-1:], bs - n, axis=0)]) if n < bs else a
        mask = (np.arange(bs) < n).astype(np.float32)
        r, l = _eval_batch(graphdef, state, pad(batch["image"]), pad(batch["label"]), mask,
                           jax.random.fold_in(key, b), steps=int(steps))
        right, ce = right + float(r), ce + float(l)
    return {"acc": right / len(ds), "loss": ce / len(ds), "n": len(ds)}


# ----------------------------------------------------------------------------------- task
def _limit(ds: ImageSet, limit: Optional[int]) -> ImageSet:
    if limit is None or limit >= len(ds):
        return ds
    return ImageSet(ds.images[:limit], ds.labels[:limit], ds.name, ds.classes)


def load_sets(cfg: VisionTrainConfig, **load_kw) -> tuple[ImageSet, ImageSet]:
    """``(train_set, eval_set)`` of ``cfg.dataset`` from ``cfg.data_dir``, cut to ``train_limit`` /
    ``eval_limit`` (first examples); ``load_kw`` go to the loader (e.g. ``verify=False``)."""
    tr = load_images(cfg.dataset, "train", cfg.data_dir, **load_kw)
    ev = load_images(cfg.dataset, cfg.eval_split, cfg.data_dir, **load_kw)
    return _limit(tr, cfg.train_limit), _limit(ev, cfg.eval_limit)


def vision_task(cfg: VisionTrainConfig, train_set: Optional[ImageSet] = None, eval_set: Optional[ImageSet] = None,
                *, trajectory: bool = False) -> Task:
    """The image-classification :class:`~rsa_jax.train.Task` for ``cfg``.

    Args:
      cfg: uses ``model``, ``t_train``, ``batch_size``, ``seed``, ``dataset``, ``data_dir``,
        ``augment``, ``train_limit``, ``eval_limit``, ``eval_batch_size``.
      train_set: training images (default: :func:`load_sets`; ``train_limit`` is applied to it).
      eval_set: images for ``evaluate`` (default: the test split; ``eval_limit`` is applied).
      trajectory: hand the full trajectory to penalties (memory T x state).

    Returns:
      The task; ``evaluate(model)`` returns ``acc`` and ``loss`` on ``eval_set`` at ``t_train``.
    """
    if train_set is None or eval_set is None:
        tr, ev = load_sets(cfg)
        train_set = tr if train_set is None else train_set
        eval_set = ev if eval_set is None else eval_set
    train_set, eval_set = _limit(train_set, cfg.train_limit), _limit(eval_set, cfg.eval_limit)
    shape = tuple(train_set.images.shape[1:])
    want = (cfg.model.image_size, cfg.model.image_size, cfg.model.channels)
    if shape != want or tuple(eval_set.images.shape[1:]) != want:
        raise ValueError(f"images {shape} / {eval_set.images.shape[1:]} do not match the model's {want} "
                         f"(dataset={cfg.dataset!r})")
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training images < batch_size {cfg.batch_size}")
    t = cfg.t_train

    def evaluate(model):
        r = evaluate_images(model, eval_set, t, cfg.eval_batch_size, key=jax.random.PRNGKey(cfg.seed + 1))
        return {"acc": r["acc"], "loss": r["loss"]}

    return Task(
        init_model=lambda rngs: VisionModel(cfg.model, rngs=rngs),
        loss_fn=lambda model, batch, key: vision_loss(model, batch, key, t, trajectory=trajectory),
        train_batches=lambda epoch: batch_iterator(train_set, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                                   augment=cfg.augment),
        steps_per_epoch=steps_per_epoch,
        evaluate=evaluate,
        name=f"vision/{cfg.dataset}",
    )
