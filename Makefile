# Two entry points for a fresh machine (Python >= 3.11 and the package registries):
#   make run   - install into .venv and start the whole local exchange on the embedded default
#   make test  - install into .venv (with test extras) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

run: install
	$(BIN)/bourse up

test: install-test
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python -m bench.engine_inprocess
	$(BIN)/python -m bench.engine_tcp --commands 300000 --window 2000 --rate 20000
	$(BIN)/python -m bench.gateway_inprocess
	$(BIN)/python -m bench.fix_gateway
	$(BIN)/python -m bench.fast_codec_bench
	$(BIN)/python -m bench.feed_bench
	$(BIN)/python -m bench.index_bench
	$(BIN)/python -m bench.journal_bench
	$(BIN)/python -m bench.link_read_cost

clean:
	rm -rf $(VENV) var build *.egg-info
