# Two entry points for a fresh machine: `make demo` (install + main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SEQLVM := $(VENV)/bin/seqlvm
# The CPU wheel of this torch is on local disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DEMO_DATA ?= data/shakespeare

.PHONY: setup demo test clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The main job: a small Bayesian sweep that registers its best model, then samples from the champion.
demo: setup
	$(SEQLVM) prepare text --source builtin:shakespeare --out $(DEMO_DATA)
	$(SEQLVM) tune --data $(DEMO_DATA) --config seqlvm/configs/sweep-sentence-vae.yaml --num-samples 3 \
		--cpus-per-worker 2 --iw-samples 5
	$(SEQLVM) sample models:/sentence-vae-shakespeare@champion --n 5 --sentence "my lord , the king is dead ." \
		--between "good morrow , my lord ." "i will not go with thee ."
	$(SEQLVM) registry show sentence-vae-shakespeare

test: setup
	$(PY) -m pytest -q

clean-demo:
	rm -rf runs $(DEMO_DATA)
