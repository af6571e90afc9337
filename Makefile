# The two entry points of the README: `make demo` (the main job) and `make test`.
# Both set up everything on a fresh Debian/Ubuntu machine: system packages, then .venv.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test system-deps venv bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade -q pip
	$(VENV)/bin/pip install -q -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

demo: venv
	$(VENV)/bin/wastesort demo

test: system-deps venv
	$(VENV)/bin/python -m pytest -q

bench: venv
	$(VENV)/bin/wastesort bench

clean:
	rm -rf $(VENV) build *.egg-info
