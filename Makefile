PYTHON ?= python3
OUT ?= outputs
FULL ?=
ARGS ?=

.PHONY: install test docs sudoku-ood claims bench figures gpu-run clean

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest tests

# API reference from the docstrings (pdoc, in the test extra): $(DOCS)/index.html. rsa_jax's __all__ hides its
# modules from pdoc, so the others are listed (subpackages bring their own). tests/test_docs.py builds it.
DOCS ?= $(OUT)/docs
docs:
	$(PYTHON) -m pdoc --docformat google -o $(DOCS) rsa_jax $$($(PYTHON) -c "import pkgutil, rsa_jax; print(*(m.name for m in pkgutil.iter_modules(rsa_jax.__path__, 'rsa_jax.') if m.name[8:] not in rsa_jax.__all__))")

sudoku-ood:
	$(PYTHON) -m experiments.sudoku_ood $(if $(FULL),--full) --out $(OUT)/sudoku_ood $(ARGS)

# The claims table's models (experiments/claims_runs.py): trains, ships and evaluates the next unfinished
# ones within BUDGET seconds (the batch split over HOST_DEVICES CPU devices, as every parked run so far:
# a resume is exact only with the same count); `make claims-park` before the machine goes.
# TCMALLOC: preloaded where the machine has it (Debian: `apt-get install libtcmalloc-minimal4`; `make
# TCMALLOC=` turns it off). glibc malloc hands XLA's per-step buffers (>32 MB) back to the kernel and faults
# them in again every step; tcmalloc keeps them (benchmarks/allocator_bench.py, which also says where the library
# is looked for; RESULTS.md). Numerics unchanged.
BUDGET ?= 7200
HOST_DEVICES ?= 2
TCMALLOC ?= $(shell $(PYTHON) -c "from benchmarks.allocator_bench import find_preload; print(find_preload('tcmalloc') or '')")
claims:
	$(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC)) XLA_FLAGS=--xla_force_host_platform_device_count=$(HOST_DEVICES) $(PYTHON) -m experiments.claims_runs train --budget $(BUDGET)

claims-park:
	$(PYTHON) -m experiments.claims_runs park

bench:
	$(PYTHON) -m benchmarks.lyapunov_bench --out $(OUT)/bench/lyapunov.json
	$(PYTHON) -m benchmarks.run_all --out $(OUT)/bench $(if $(FULL),--paper --precisions float32 tensorfloat32 bfloat16)
	$(if $(FULL),,$(PYTHON) -m benchmarks.cpu_step_bench --out $(OUT)/bench/cpu_step.json)

# The whole GPU part in one command of at most 9 minutes (experiments/gpu_run.py; --dry-run: tiny, on a CPU);
# the Sudoku data are the repository's own (data/sudoku, committed xz-compressed).
gpu-run:
	PYTHONUNBUFFERED=1 $(PYTHON) -m experiments.gpu_run --out $(OUT)/gpu_run $(ARGS)

figures:
	$(PYTHON) -m experiments.jacobian_tokens --out $(OUT)/jacobian_tokens
	$(PYTHON) -m experiments.eigenvalues --out $(OUT)/eigenvalues
	$(PYTHON) -m experiments.lyapunov --out $(OUT)/lyapunov
	$(PYTHON) -m experiments.oscillator_size --out $(OUT)/oscillator_size
	$(PYTHON) -m experiments.cifar10 --out $(OUT)/cifar10
	$(PYTHON) -m experiments.regularization --out $(OUT)/regularization
	$(PYTHON) -m experiments.heads --out $(OUT)/heads
	$(PYTHON) -m experiments.gamma_table --out $(OUT)/gamma_table --runs-from $(OUT)/oscillator_size/runs
	$(PYTHON) -m experiments.pseudo_energy --out $(OUT)/pseudo_energy
	$(PYTHON) -m experiments.training_curves --out $(OUT)/training_curves
	$(PYTHON) -m experiments.le_vs_ood --out $(OUT)/le_vs_ood

clean:
	rm -rf $(OUT) .pytest_cache
