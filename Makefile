# Two commands for a fresh machine:  make demo  (train + evaluate the embedded model)
#                                     make test  (the whole test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PyTorch is only for the tests that check our Hugging Face export and for the benchmark peer.
TORCH ?= torch==2.13.0
# sentence-transformers loads the exported folder in tests/test_export_hf_load.py (needs torch).
SENTENCE_TRANSFORMERS ?= sentence-transformers==6.3.0
WORKDIR ?= workdirs/demo
TEST_WORKERS ?= 2
# The real pool the search benchmark uses: zero-shot XQuAD-R test-fold embeddings (made once).
BENCH_POOL_DIR ?= workdirs/real_pool
BENCH_POOL := $(BENCH_POOL_DIR)/eval/xquad-r-test/embeddings.npz
BENCH_ARGS ?=

.PHONY: venv demo demo-mlqa test bench offline-bundle clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q '$(TORCH)' || echo "note: $(TORCH) not installed; PyTorch comparison tests will be skipped"
	($(PY) -c "import torch" 2>/dev/null && $(PY) -m pip install -q '$(SENTENCE_TRANSFORMERS)') || echo "note: $(SENTENCE_TRANSFORMERS) not installed (it needs torch); its export check will be skipped"
	touch $@

demo: venv
	$(PY) -m hybrid_jax.main --config configs/demo_cpu.py --workdir $(WORKDIR)

# The demo's dev-selected step on MLQA-R, zero-shot (after make demo).
MLQA_R := [{"name": "mlqa-r", "type": "mlqa-r", "path": "../shared/data/mlqa-r", "fold": "all"}]
demo-mlqa: venv
	$(PY) -m hybrid_jax.main --config configs/demo_cpu.py --workdir $(WORKDIR) --mode evaluate \
	    --config.eval.datasets='$(MLQA_R)'

# Test files run in TEST_WORKERS processes (pytest-xdist), each file's tests in one of them so that
# a file's shared fixtures are built once; each process simulates 8 CPU devices. A passed test's
# temporary folder is deleted when it ends (exported models are hundreds of MB each), a failed
# test's is kept for inspection.
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -o tmp_path_retention_policy=failed tests

# Benchmarks (BENCHMARKS.md, benchmarks/results.json); run them on an otherwise idle machine.
bench: venv $(BENCH_POOL)
	$(PY) -m benchmarks --config configs/demo_cpu.py --real_pool $(BENCH_POOL) $(BENCH_ARGS)

$(BENCH_POOL): | venv
	$(PY) -m hybrid_jax.main --config configs/demo_cpu.py --workdir $(BENCH_POOL_DIR) --mode evaluate \
	    --config.eval.save_embeddings=True --config.eval.plots=False --config.eval.progress=False

# The offline bundle for an accelerator host without network (device_bundle/: wheels, XQuAD-R +
# MLQA-R archive, trimmed model pack; BUILD.md "Accelerator acceptance check"). Needs PyPI for
# the wheels and ../shared/data.
offline-bundle: venv
	launch/offline_wheels.sh device_bundle/wheels
	$(PY) -m benchmarks.accelerator_check --prepare --bundle device_bundle

clean:
	rm -rf $(VENV) workdirs .pytest_cache
