# The two commands of the README: `make demo` and `make test`. Both create .venv and
# install the project (with its test extra) when it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
XAI := $(VENV)/bin/xai
STAMP := $(VENV)/.xai-installed
DEMO := demo-out
export HF_HUB_OFFLINE := 1

.PHONY: install demo test lint bench completions man readme docs reference-images train-builtin clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch and torchvision pinned together: the registry caps them, and grad-cam and smp need torchvision.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,dicom,monai,onnx]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PY) -m xaicli.models.builtin.shapes $(DEMO)/seg --count 4 --task segmentation >/dev/null
	$(PY) -m xaicli.models.builtin.shapes $(DEMO)/cls --count 4 --task classification >/dev/null
	@echo "== xai predict --json: the classifier builtin:shapes-cls names each object's colour"
	$(XAI) predict -m builtin:shapes-cls --json $(DEMO)/cls
	@echo "== predict | attribute (steps raised until |delta| <= 1%) | cam | render: the segmenter builtin:shapes-seg, one pipe, no files in between"
	$(XAI) predict -m builtin:shapes-seg $(DEMO)/seg \
	  | $(XAI) attribute --baseline black --baseline blur --tolerance 0.01 \
	  | $(XAI) cam --method gradcam --method gradcam++ \
	  | tee $(DEMO)/seg.tar \
	  | $(XAI) render -o $(DEMO)/figures/ --dpi 100
	$(XAI) attribute -m builtin:shapes-cls $(DEMO)/cls --target top2 -o $(DEMO)/records/
	@echo "== xai stats: focus ratio (attribution inside the predicted mask / outside) per map"
	$(XAI) stats $(DEMO)/seg.tar | $(PY) -c 'import sys, json; [print("%-8s %-34s %-8s focus_ratio=%.2f pointing_game=%s" % (r["id"], r["map"], r["target"], r["focus_ratio"] or 0, r["pointing_game"])) for r in map(json.loads, sys.stdin)]'
	$(XAI) stats $(DEMO)/seg.tar --format csv --summary -o $(DEMO)/stats.csv
	$(XAI) render $(DEMO)/records/ -o $(DEMO)/figures/ --dpi 100
	@echo "== figures in $(DEMO)/figures/, records in $(DEMO)/seg.tar and $(DEMO)/records/, table in $(DEMO)/stats.csv"

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

# The README's generated tables: models from the format registry (xaicli/models/formats), methods
# from the method registry (xaicli/explain/registry.py), each between its markers.
readme: $(STAMP)
	$(PY) -m xaicli.models.formats.readme README.md
	$(PY) -m xaicli.cli.readme README.md

docs: man completions readme

reference-images: $(STAMP)
	$(PY) tests/make_render_reference.py

train-builtin: $(STAMP)
	$(PY) -m xaicli.models.builtin.train

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
