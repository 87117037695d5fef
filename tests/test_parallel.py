"""rsa_jax.parallel: the data-parallel train step on 4 (fake CPU) devices equals the single-device step.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` only works if it is set before jax
initializes its backends, which pytest has already done in this process, so the comparison runs
in a subprocess (the script below) and reports JSON on its last line.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os
    import chex
    import jax
    import numpy as np
    from rsa_jax import parallel
    from rsa_jax.data.sudoku import generate_puzzles, to_model_inputs
    from rsa_jax.models.sudoku import ModelConfig
    from rsa_jax.regularizers import SpecPenalty
    from rsa_jax.tasks.sudoku import sudoku_task
    from rsa_jax.train import TrainConfig, init_train_state, make_optimizer, make_train_step, split_model

    assert jax.device_count() == 4, jax.devices()

    def close(a, b, atol):   # None if the trees agree to atol (chex), else chex's message
        try:
            chex.assert_trees_all_close(a, b, atol=atol, rtol=0.0)
        except AssertionError as e:
            return str(e)[-2000:]
        return None

    out = {}
    for kind in ("akorn",):
        cfg = TrainConfig(model=ModelConfig(kind=kind, d=16, heads=2, n=4), t_train=2, batch_size=8,
                          lr=1e-2, ema_after=1, ema_every=1, progress=False)
        tr = generate_puzzles(16, range(34, 40), seed=0)
        task = sudoku_task(cfg, tr, tr)
        penalties = (SpecPenalty(1e-2),)
        model = task.init_model(__import__("flax").nnx.Rngs(0))
        graphdef, _, rest = split_model(model)
        tx = make_optimizer(cfg)
        state0 = init_train_state(model, tx, jax.random.PRNGKey(0), penalties)
        pure = make_train_step(graphdef, task, tx, penalties, cfg=cfg, rest=rest, jit=False)
        batches = list(task.train_batches(0))

        single = jax.jit(pure)
        s1, m1 = state0, []
        for b in batches:
            s1, m = single(s1, b)
            m1.append(m)

        mesh = parallel.make_mesh()
        sharded = parallel.make_sharded_train_step(pure, mesh)
        s2, m2 = parallel.replicate(state0, mesh), []
        for b in batches:
            sb = parallel.shard_batch(b, mesh)
            assert len(sb["digits"].addressable_shards) == 4
            assert sb["digits"].addressable_shards[0].data.shape == (2, 81)
            s2, m = sharded(s2, sb)
            m2.append(m)
        assert all(l.sharding.is_fully_replicated for l in jax.tree.leaves(s2)), "state must stay replicated"

        scale = max(1.0, max(float(np.max(np.abs(x))) for x in jax.tree.leaves(s1.params)))
        out[kind] = {
            "steps": len(batches),
            "params": close(s1.params, s2.params, 1e-5 * scale),
            "ema": close(s1.ema_params, s2.ema_params, 1e-5 * scale),
            "opt_state": close(s1.opt_state, s2.opt_state, 1e-5 * scale),
            "extra": close(s1.extra, s2.extra, 1e-5 * scale),
            "loss": close([m["loss"] for m in m1], [m["loss"] for m in m2], 1e-5),
            "grad_norm": close([m["grad_norm"] for m in m1], [m["grad_norm"] for m in m2], 1e-5),
        }
    # train(): data_parallel=True runs the same numbers through the trainer (checkpoints included)
    import dataclasses, tempfile
    from rsa_jax.train import train
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=ModelConfig(kind="itrsa", d=16, heads=2, n=4), t_train=2, batch_size=8, epochs=1,
                          lr=1e-2, ema_after=1, ema_every=1, progress=False, checkpoint_every=1, out=tmp + "/a")
        tr = generate_puzzles(16, range(34, 40), seed=0)
        m_a, h_a = train(cfg, sudoku_task(cfg, tr, tr))
        cfg_b = dataclasses.replace(cfg, data_parallel=True, out=tmp + "/b")
        m_b, h_b = train(cfg_b, sudoku_task(cfg_b, tr, tr))
        out["train"] = {"params": close(m_a.pure_step()[1], m_b.pure_step()[1], 1e-5),
                        "loss": close([a["loss"] for a in h_a], [b["loss"] for b in h_b], 1e-5), "records": len(h_b)}
    # a batch that does not split evenly is refused with a clear message
    try:
        parallel.shard_batch({"x": np.zeros((6, 3))}, parallel.make_mesh())
        out["uneven"] = "accepted"
    except ValueError as e:
        out["uneven"] = str(e)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"subprocess failed:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sharded_step_equals_single_device(result):
    r = result["akorn"]
    assert r["steps"] == 2
    for k in ("params", "ema", "opt_state", "extra", "loss", "grad_norm"):
        assert r[k] is None, (k, r[k])


@pytest.mark.slow
def test_train_with_data_parallel_equals_single_device(result):
    r = result["train"]
    assert r["records"] == 2, r
    assert r["params"] is None and r["loss"] is None, r


@pytest.mark.slow
def test_uneven_batch_is_refused(result):
    assert "not divisible" in result["uneven"]


def test_single_process_helpers():
    """Mesh/sharding helpers on the devices of this process (one CPU device is enough)."""
    import jax
    import numpy as np

    from rsa_jax import parallel

    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    b = parallel.shard_batch({"x": np.arange(4 * jax.device_count() * 3.0).reshape(-1, 3), "t": np.float32(1)}, mesh)
    assert b["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert b["t"].sharding.is_fully_replicated
    r = parallel.replicate({"w": np.ones((2, 2))}, mesh)
    assert r["w"].sharding.is_fully_replicated
    step = parallel.make_sharded_train_step(lambda s, b: (s, {"m": b["x"].sum()}), mesh)
    s, m = step(r, b)
    np.testing.assert_allclose(m["m"], np.asarray(b["x"]).sum())
