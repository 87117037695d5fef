"""rsa-jax: recurrent self-attention dynamics as pure JAX maps, with Jacobian and Lyapunov tools."""

from rsa_jax.attention import (attention_weights, full_matrices, init_attention, msa, orthogonal,
                               orthogonal_value_output, sa_heads, symmetric_multi_head, symmetric_single_head,
                               with_spectral_norms)
from rsa_jax.dynamics import (akorn_step, integrate, iterate, itrsa_step, msa_field, projected_sa_field,
                              rollout)
from rsa_jax.energy import akorn_energy, e_multi, e_single, pseudo_energy
from rsa_jax.exponents import max_lyapunov, mean_lyapunov, null_directions
from rsa_jax.jacobian import (PowerIterationState, dense_jacobian, init_power_state, jacobian_eigenvalues,
                              linear_operators, pi_jacobian, power_iteration, rmsnorm_jacobian, spectral_norm)
from rsa_jax.lyapunov import LyapunovResult, lyapunov_exact, lyapunov_spectrum
from rsa_jax.monitor import (contribution_index, msa_contribution_index, msa_cosine, pseudo_energy_trajectory,
                             symmetric_jacobian)
from rsa_jax.ops import chunk_norm, normalize, omega_rotation, pi, proj, rms_norm
from rsa_jax.regularizers import (EnergyPenalty, JacobianPenalty, SpecPenalty, jacobian_penalty,
                                  jacobian_penalty_init, r_e_multi, r_e_single, spec_init, spec_penalty)

__all__ = [
    "attention_weights", "full_matrices", "init_attention", "msa", "orthogonal", "orthogonal_value_output",
    "sa_heads", "symmetric_multi_head", "symmetric_single_head", "with_spectral_norms", "akorn_step",
    "integrate", "iterate", "itrsa_step", "msa_field", "projected_sa_field", "rollout", "akorn_energy",
    "e_multi", "e_single", "pseudo_energy", "PowerIterationState", "dense_jacobian", "init_power_state",
    "jacobian_eigenvalues", "linear_operators", "pi_jacobian", "power_iteration", "rmsnorm_jacobian",
    "spectral_norm", "LyapunovResult", "lyapunov_exact", "lyapunov_spectrum", "max_lyapunov", "mean_lyapunov",
    "null_directions", "contribution_index", "msa_contribution_index", "msa_cosine",
    "pseudo_energy_trajectory", "symmetric_jacobian", "chunk_norm", "normalize", "omega_rotation", "pi",
    "proj", "rms_norm", "EnergyPenalty", "JacobianPenalty", "SpecPenalty", "jacobian_penalty",
    "jacobian_penalty_init", "r_e_multi", "r_e_single", "spec_init", "spec_penalty", "solve",
]

__version__ = "0.1.0"


def __getattr__(name):
    """``rsa_jax.solve``, imported on first use (it loads Flax and the shipped models' code)."""
    if name == "solve":
        # PEP 562 lazy attribute, resolved on first access only: importing rsa_jax never imports rsa_jax.solve
        # (Flax, the checkpoints)
        import importlib
        module = importlib.import_module("rsa_jax.solve")   # a callable module: rsa_jax.solve(puzzles) solves
        globals()["solve"] = module
        return module
    raise AttributeError(f"module 'rsa_jax' has no attribute {name!r}")
