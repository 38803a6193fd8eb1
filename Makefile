# make test   create .venv (+ .venv-labelstudio for the end-to-end tests) and run the test suite
# make demo   start Label Studio and the backend with sample tasks (see README)
# make browser  install headless Chromium + chromedriver for the browser tests (root + apt; else a warning)
PYTHON ?= python3
VENV ?= .venv
LABEL_STUDIO_VENV ?= .venv-labelstudio
LABEL_STUDIO_VERSION ?= 1.23.2

# A machine with an NVIDIA GPU gets the model card's CUDA torch; any other the CPU build.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
RUNTIME_REQUIREMENTS := $(if $(HAS_GPU),requirements.txt,requirements-cpu.txt)

.PHONY: test demo bench venv labelstudio browser clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-base.txt requirements-cpu.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r $(RUNTIME_REQUIREMENTS) -r requirements-dev.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps --editable .
	touch $@

# Label Studio is a separate service: it lives in its own virtualenv and is never imported.
labelstudio: $(LABEL_STUDIO_VENV)/.installed

$(LABEL_STUDIO_VENV)/.installed:
	$(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

# The browser tests (tests/test_browser_labelstudio.py) drive Chromium from the system packages.
# Installed here when this runs as root with apt; otherwise a warning, and those tests fail saying how.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium and chromedriver present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "WARNING: chromium/chromedriver missing and apt-get unavailable (or not root):" \
			"the browser tests will fail; install chromium and chromium-driver, or run as root"; \
	fi

test: venv labelstudio browser
	$(VENV)/bin/python -m pytest

demo: venv labelstudio
	$(VENV)/bin/mlcdseg demo

bench: venv
	$(VENV)/bin/python bench/codec.py
	$(VENV)/bin/python bench/evaluate.py
	$(VENV)/bin/python bench/backend_load.py
	$(VENV)/bin/python bench/prelabel.py

clean:
	rm -rf $(VENV) $(LABEL_STUDIO_VENV) build *.egg-info
