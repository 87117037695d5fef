"""Looped image classifiers: patchify, shapes, pure step = rollout, a tiny training run.

All models share the CIFAR shapes (32 x 32 x 3, D = 16, H = 2) so that the eager initializers
compile once per session; the Fashion-MNIST test (28 x 28 x 1) is the only other shape.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from flax import nnx

from rsa_jax.dynamics import rollout
from rsa_jax.models.common import gta_angles, sinusoidal_2d
from rsa_jax.models.vision import VisionConfig, VisionModel, patchify, unpatchify
from rsa_jax.ops import chunk_norm

TINY = dict(d=16, heads=2, n=4)


def test_patchify_round_trip_and_order():
    imgs = jax.random.normal(jax.random.key(0), (2, 12, 8, 3))
    tok = patchify(imgs, 4)
    assert tok.shape == (2, 6, 48)
    np.testing.assert_array_equal(unpatchify(tok, 4, (3, 2), 3), imgs)
    # token r * (W/P) + c is the (r, c) patch, features ordered (row, col, channel)
    for r in range(3):
        for c in range(2):
            want = imgs[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4, :].reshape(2, -1)
            np.testing.assert_array_equal(tok[:, 2 * r + c], want)
    with pytest.raises(ValueError):
        patchify(imgs, 5)


def test_grid_tables_generalize_sudoku_defaults():
    assert sinusoidal_2d(32).shape == (81, 32)
    assert gta_angles(8).shape == (81, 4)
    np.testing.assert_array_equal(sinusoidal_2d(32), sinusoidal_2d(32, (9, 9)))
    t = gta_angles(8, (8, 8))
    assert t.shape == (64, 4)
    # token (r, c) = (1, 0) rotates its first pairs by pi/8, (0, 1) its last pairs
    np.testing.assert_allclose(t[8, 0], np.pi / 8, rtol=1e-6)
    np.testing.assert_allclose(t[1, 2], np.pi / 8, rtol=1e-6)
    assert t[1, 0] == 0 and t[8, 2] == 0


@pytest.mark.parametrize("kind,position,init", [("itrsa", "embedding", "condition"), ("akorn", "gta", "noise")])
def test_shapes_and_pure_step_is_the_model_map(kind, position, init):
    cfg = VisionConfig(kind=kind, position=position, init=init, **TINY)
    m = VisionModel(cfg, rngs=nnx.Rngs(0))
    imgs = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float32)
    graphdef, state = nnx.split(m)

    @jax.jit
    def run(state, imgs):
        model = nnx.merge(graphdef, state)
        c, x0 = model.condition(imgs, jax.random.key(3))
        step, params = model.pure_step()
        x = step(params, step(params, x0, c), c)
        f = lambda y: step(params, y, c[0])  # one image, as the analysis tools use it
        return dict(c=c, x0=x0, x=x, x_model=model.rollout(c, x0, 2), x_rollout=rollout(step, params, x0, c, 2),
                    logits_x=model.readout(x), logits=model(imgs, jax.random.key(3), 2), f0=f(x0[0]),
                    s0=step(params, x0, c)[0])

    r = run(state, imgs)
    s = 64
    assert r["c"].shape == r["x0"].shape == (2, s, 16)
    assert r["logits"].shape == (2, 10) and r["logits"].dtype == jnp.float32
    np.testing.assert_allclose(chunk_norm(r["x0"], cfg.state_chunk), 1.0, rtol=1e-5)
    np.testing.assert_allclose(r["x_model"], r["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["x_rollout"], r["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["logits"], r["logits_x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["f0"], r["s0"], rtol=1e-5, atol=1e-6)  # one image alone = batched
    step, params = m.pure_step()
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    if position == "gta":
        assert params["attn"]["gta"].shape == (s, 16 // 2 // 2)
    else:
        assert m.pos.shape == (s, 16)
    if init == "condition":
        from rsa_jax.ops import pi
        np.testing.assert_allclose(r["x0"], pi(r["c"], cfg.state_chunk), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        m.condition(jnp.zeros((2, 28, 28, 3)))


# ------------------------------------------------------------------------------ task + trainer
def test_tiny_training_on_fake_cifar_decreases_loss(tmp_path):
    from rsa_jax.data.images import load_images, make_fake_cifar10_archive
    from rsa_jax.tasks.vision import VisionTrainConfig, evaluate_images, vision_task
    from rsa_jax.train import load_model, train

    make_fake_cifar10_archive(tmp_path, n_train_per_batch=8, n_test=8, seed=0)
    tr = load_images("cifar10", "train", tmp_path, verify=False)
    assert len(load_images("cifar10", "test", tmp_path, verify=False)) == 8
    assert tr.images.shape == (40, 32, 32, 3)
    cfg = VisionTrainConfig(dataset="cifar10", model=VisionConfig(kind="akorn", **TINY), t_train=2,
                            batch_size=20, epochs=6, lr=3e-3, out=str(tmp_path / "run"), progress=False,
                            log_every=1, checkpoint_every=0, eval_every=6, eval_batch_size=40)
    task = vision_task(cfg, tr, tr)  # evaluate on the training images: one eval compilation
    assert task.steps_per_epoch == 2
    before = evaluate_images(task.init_model(nnx.Rngs(cfg.seed)), tr, cfg.t_train, 40)
    model, history = train(cfg, task, resume=False)
    after = evaluate_images(model, tr, cfg.t_train, 40)
    assert after["loss"] < before["loss"] - 0.05, (before, after)
    losses = [r["loss"] for r in history if "loss" in r]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert any("eval/acc" in r for r in history)
    loaded, lcfg = load_model(cfg.out)
    assert isinstance(loaded, VisionModel) and lcfg == cfg
    np.testing.assert_allclose(evaluate_images(loaded, tr, cfg.t_train, 40)["loss"], after["loss"], rtol=1e-5)


def test_fashion_mnist_task():
    from rsa_jax.data.images import FASHION_MNIST_DEFAULT_DIR
    from rsa_jax.tasks.vision import VisionTrainConfig, vision_task
    import os
    if not os.path.exists(os.path.join(FASHION_MNIST_DEFAULT_DIR, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("Fashion-MNIST files not installed")
    cfg = VisionTrainConfig(model=VisionConfig(kind="itrsa", **TINY), t_train=1, batch_size=8,
                            train_limit=16, eval_limit=16)
    assert (cfg.model.image_size, cfg.model.channels) == (28, 1)
    task = vision_task(cfg)
    batch = next(iter(task.train_batches(0)))
    assert batch["image"].shape == (8, 28, 28, 1)
    loss, metrics = task.loss_fn(task.init_model(nnx.Rngs(0)), batch, jax.random.key(0))
    assert np.isfinite(loss) and metrics["aux"]["x"].shape == (8, 49, 16)
