# Two commands for a fresh machine:  make demo  (train + evaluate the embedded model)
#                                     make test  (the whole test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PyTorch is only for the tests that check our Hugging Face export and for the benchmark peer.
TORCH ?= torch==2.13.0
WORKDIR ?= workdirs/demo

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q '$(TORCH)' || echo "note: $(TORCH) not installed; PyTorch comparison tests will be skipped"
	touch $@

demo: venv
	$(PY) -m hybrid_jax.main --config configs/demo_cpu.py --workdir $(WORKDIR)

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) workdirs .pytest_cache
