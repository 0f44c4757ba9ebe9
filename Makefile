# Two entry points for a fresh machine: `make demo` (install + main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SEQLVM := $(VENV)/bin/seqlvm
# The CPU wheel of this torch is on local disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DEMO_DATA ?= data/shakespeare

.PHONY: setup system-packages speech-data demo test clean-demo cluster-up cluster-down

setup: $(VENV)/.installed

# Debian's flite synthesises the built-in speech corpus (`builtin:flite`, used by the audio tests). Installed when
# missing and apt-get can run as root (a failed install stops setup); otherwise a hint, and those tests skip (in
# CI they fail: docs/testing.md#skips).
system-packages:
	@if command -v flite >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends flite >/dev/null; \
	else echo "note: install Debian's flite for builtin:flite speech (apt-get install flite)"; fi

# Real recorded speech for `builtin:speech-es|speech-ro` (a 161 MB download, so not part of setup).
speech-data:
	apt-get install -y --no-install-recommends tuxpaint-stamps-default

$(VENV)/.installed: pyproject.toml | system-packages
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

# -rs: every skip with its reason (CI=true turns a skip into a failure: docs/testing.md#skips).
test: setup
	$(PY) -m pytest -q -rs

# A real multi-process Ray cluster (head + worker node) and an MLflow server on 127.0.0.1; prints what to export.
cluster-up: setup
	$(SEQLVM) cluster up --dir runs/cluster

cluster-down:
	$(SEQLVM) cluster down --dir runs/cluster

clean-demo:
	rm -rf runs $(DEMO_DATA)
