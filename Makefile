# The two quick-start commands: `make demo` and `make test`. Both create .venv when missing.
# `make runtime`: the torch-free deploy install in .venv-runtime, as the README tells a user to make it.
VENV ?= .venv
RUNTIME_VENV ?= .venv-runtime
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-slow lint venv runtime espeak chromium bench clean

$(VENV)/.installed: setup.py pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

# plain `pip install .` (no extras): kospeech.runtime and `kospeech transcribe EXPORT_DIR` without torch,
# torchaudio or librosa, about 200 MB. Not editable, as a user's install: rerun after changing the code
# (tests/test_install_light.py transcribes an export with it, in CI and wherever it exists)
runtime:
	@[ -x $(RUNTIME_VENV)/bin/python ] || python3 -m venv $(RUNTIME_VENV)
	@rm -rf build  # setuptools' staging copy: a module since removed from kospeech/ would ship from it
	$(RUNTIME_VENV)/bin/pip install -q .
	@du -sh $(RUNTIME_VENV)

espeak:
	@command -v espeak-ng >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }

# headless Chromium, its WebDriver and a Korean font, for the web demo's browser tests (tests/test_serve_browser.py)
chromium:
	@command -v chromedriver >/dev/null 2>&1 && fc-list | grep -qi nanum || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium chromium-driver fonts-nanum; }

demo: venv espeak
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/mini/run.sh

lint: venv
	$(VENV)/bin/ruff check .

test: venv espeak chromium lint
	$(PY) -m pytest $(PYTEST_ARGS)

# the trainings and whole recipe runs marked slow (CI runs them after `make test`)
test-slow: venv espeak
	$(PY) -m pytest $(PYTEST_ARGS) -m slow

bench: venv espeak
	$(PY) bench/features.py
	$(PY) bench/decode.py
	$(PY) bench/export.py

clean:
	rm -rf recipes/mini/exp recipes/mini/data recipes/mini/dump recipes/mini/corpus
