# The two commands of the README: `make demo` and `make test`. Both create .venv and
# install the project (with its test extra) when it is missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
XAI := $(VENV)/bin/xai
STAMP := $(VENV)/.xai-installed
DEMO := demo-out
export HF_HUB_OFFLINE := 1

.PHONY: install demo test lint bench completions man reference-images train-builtin clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch and torchvision pinned together: the registry caps them, and grad-cam and smp need torchvision.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,dicom]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PY) -m xaicli.models.builtin.shapes $(DEMO)/seg --count 4 --task segmentation >/dev/null
	$(PY) -m xaicli.models.builtin.shapes $(DEMO)/cls --count 4 --task classification >/dev/null
	@echo "== xai predict --json (classifier, builtin:shapes-cls)"
	$(XAI) predict -m builtin:shapes-cls --json $(DEMO)/cls
	@echo "== xai predict --json (segmenter, builtin:shapes-seg)"
	$(XAI) predict -m builtin:shapes-seg --json $(DEMO)/seg
	@echo "== records: xai predict -m builtin:shapes-seg ... -o $(DEMO)/records/"
	$(XAI) predict -m builtin:shapes-seg $(DEMO)/seg -o $(DEMO)/records/
	@ls $(DEMO)/records

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check xaicli tests bench

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

completions: $(STAMP)
	mkdir -p completions
	_XAI_COMPLETE=source_bash $(XAI) > completions/xai.bash
	_XAI_COMPLETE=source_zsh $(XAI) > completions/_xai
	_XAI_COMPLETE=source_fish $(XAI) > completions/xai.fish

man: $(STAMP)
	$(PY) -m xaicli.cli.manpages man/

reference-images: $(STAMP)
	$(PY) tests/make_render_reference.py

train-builtin: $(STAMP)
	$(PY) -m xaicli.models.builtin.train

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
