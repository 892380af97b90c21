# The two commands of the README:
#   make test   installs everything (Debian packages + .venv) and runs the test suite
#   make lock   refreshes requirements.lock (newest releases the pins allow) and runs the tests
#   make demo   installs everything, makes the default corpus, pretrains, fine-tunes, prints WER
PY := .venv/bin/python

.PHONY: setup test lint demo lock

setup:
	bash tools/setup/setup.sh

test: setup
	$(PY) -m pytest -q -n auto --dist loadfile --durations=10

lint: setup
	$(PY) -m ruff check speechpos recipes tools tests

demo: setup
	$(PY) tools/run_demo.py

lock:
	bash tools/setup/refresh_lock.sh
