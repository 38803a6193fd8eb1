# make test   create .venv (+ .venv-labelstudio for the end-to-end tests) and run the test suite
# make demo   start Label Studio and the backend with sample tasks (see README)
PYTHON ?= python3
VENV ?= .venv
LABEL_STUDIO_VENV ?= .venv-labelstudio
LABEL_STUDIO_VERSION ?= 1.23.2

# A machine with an NVIDIA GPU gets the model card's CUDA torch; any other the CPU build.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
RUNTIME_REQUIREMENTS := $(if $(HAS_GPU),requirements.txt,requirements-cpu.txt)

.PHONY: test demo bench venv labelstudio clean

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

test: venv labelstudio
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
