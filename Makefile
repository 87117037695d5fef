PYTHON ?= python3
OUT ?= outputs
FULL ?=

.PHONY: install test sudoku-ood bench figures clean

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest tests

sudoku-ood:
	$(PYTHON) -m experiments.sudoku_ood $(if $(FULL),--full) --out $(OUT)/sudoku_ood

bench:
	$(PYTHON) -m benchmarks.lyapunov_bench --out $(OUT)/bench/lyapunov.json
	$(PYTHON) -m benchmarks.run_all --out $(OUT)/bench $(if $(FULL),--paper --precisions float32 tensorfloat32 bfloat16)

clean:
	rm -rf $(OUT) .pytest_cache
