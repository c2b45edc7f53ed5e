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

.PHONY: install demo test test-lowest lint bench completions man readme docs fuzz reference-images train-builtin clean

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
	@echo "== predict | attribute (adaptive: points until the map's estimated error and |delta| are <= 1%, the default) | cam | render: the segmenter builtin:shapes-seg, one pipe, no files in between"
	$(XAI) predict -m builtin:shapes-seg $(DEMO)/seg \
	  | $(XAI) attribute --baseline black --baseline blur \
	  | $(XAI) cam --method gradcam --method gradcam++ \
	  | tee $(DEMO)/seg.tar \
	  | $(XAI) render -o $(DEMO)/figures/ --dpi 100
	$(XAI) attribute -m builtin:shapes-cls $(DEMO)/cls --target top2 -o $(DEMO)/records/
	@echo "== xai stats: focus ratio (attribution inside the predicted mask / outside) per map"
	$(XAI) stats $(DEMO)/seg.tar | $(PY) -c 'import sys, json; [print("%-8s %-34s %-8s focus_ratio=%.2f pointing_game=%s" % (r["id"], r["map"], r["target"], r["focus_ratio"] or 0, r["pointing_game"])) for r in map(json.loads, sys.stdin)]'
	$(XAI) stats $(DEMO)/seg.tar --format csv --summary -o $(DEMO)/stats.csv
	$(XAI) render $(DEMO)/records/ -o $(DEMO)/figures/ --dpi 100
	@echo "== xai report: one offline page of both batches (two models), ground-truth metrics from xai stats --mask; open it in a browser:"
	$(XAI) stats $(DEMO)/seg.tar --mask $(DEMO)/seg/masks/ -o $(DEMO)/seg-stats.jsonl
	$(XAI) report $(DEMO)/seg.tar $(DEMO)/records/ --stats $(DEMO)/seg-stats.jsonl -o $(DEMO)/report/ --title "xai demo"
	@echo "== figures in $(DEMO)/figures/, records in $(DEMO)/seg.tar and $(DEMO)/records/, table in $(DEMO)/stats.csv, page in $(DEMO)/report/index.html"

# Two workers, one file each at a time (module fixtures build their models once), one torch thread
# per process: on the 2-core CI machine 13 min serially, 6.5 min so (two threads per worker spin-wait
# on each other's cores). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(XDIST)

# The suite on the oldest Python and the lowest release of every requirement that pyproject.toml allows
# (.ci/lowest.py pins each floor): a floor stated there is a floor tested. Not in `make test`: it downloads
# an older torch (about 3 GB; 6.3 GB installed) into .venv-lowest. PYTHON_LOWEST names that Python where it is not on PATH.
# `=`, not `:=`: read only when test-lowest runs, not by every make (tomllib needs Python 3.11)
LOWEST_PY = $(shell $(PYTHON) .ci/lowest.py --python)
PYTHON_LOWEST ?= python$(LOWEST_PY)
LOWEST := .venv-lowest
test-lowest:
	@$(PYTHON_LOWEST) -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(LOWEST_PY)".split("."))))' \
	  || { echo "make test-lowest: $(PYTHON_LOWEST) is not Python $(LOWEST_PY); name one: make test-lowest PYTHON_LOWEST=/path/to/python$(LOWEST_PY)" >&2; exit 2; }
	test -x $(LOWEST)/bin/python || $(PYTHON_LOWEST) -m venv $(LOWEST)
	$(PYTHON) .ci/lowest.py test dicom monai onnx > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/constraints.txt -e '.[test,dicom,monai,onnx]'
	$(LOWEST)/bin/python -m pip list --format freeze > $(LOWEST)/installed.txt
	PATH=$(CURDIR)/$(LOWEST)/bin:$$PATH OMP_NUM_THREADS=1 $(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(XDIST)

# Property-based fuzzing of every reader of records (tests/test_fuzz.py): FUZZ_EXAMPLES cases per
# target; the cases, minutes and findings per target go to fuzz-report.json.
FUZZ_EXAMPLES ?= 10000
fuzz: $(STAMP)
	XAI_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) XAI_FUZZ_REPORT=fuzz-report.json \
	  $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py --hypothesis-show-statistics $(FUZZ_ARGS)
	cat fuzz-report.json

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
# from the method registry (xaicli/explain/registry.py), records from xaicli/io/record.schema.json,
# each between its markers.
readme: $(STAMP)
	$(PY) -m xaicli.models.formats.readme README.md
	$(PY) -m xaicli.cli.readme README.md
	$(PY) -m xaicli.io.schema_doc README.md

docs: man completions readme

reference-images: $(STAMP)
	$(PY) tests/make_render_reference.py
	$(PY) tests/make_report_reference.py

train-builtin: $(STAMP)
	$(PY) -m xaicli.models.builtin.train

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
