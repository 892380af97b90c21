# The two commands of the README:
#   make test   installs everything (Debian packages + .venv) and runs the test suite
#   make demo   installs everything, makes the default corpus, pretrains, fine-tunes, prints WER
PY := .venv/bin/python

.PHONY: setup test lint demo

setup:
	bash tools/setup.sh

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check speechpos recipes tools tests

demo: setup
	$(PY) tools/run_demo.py
