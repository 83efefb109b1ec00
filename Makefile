# `make demo` and `make test` each do all set-up on a fresh machine, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-deps check lint bench clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/drift demo

# everything: lint, then every test (the broker, the encoder, the notebook, many seeds)
test: lint test-deps
	$(PY) -m pytest -q --durations=40

# Debian's Alertmanager and Prometheus for tests/test_alertmanager.py and tests/test_deploy.py,
# where this runs as root with apt (as on CI); elsewhere those tests are skipped and say how to
# install them
test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { [ ! -x /usr/bin/prometheus-alertmanager ] || [ ! -x /usr/bin/promtool ]; }; then \
	  echo "installing prometheus-alertmanager and prometheus (apt) for the Alertmanager and deploy/ tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  (timeout 300 apt-get install -y -q --no-install-recommends prometheus-alertmanager prometheus >/dev/null 2>&1 || \
	   (timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q --no-install-recommends prometheus-alertmanager prometheus >/dev/null 2>&1)) \
	  || echo "could not install prometheus-alertmanager/prometheus: their tests will be skipped"; \
	fi

# the fast tier: lint, unit tests, doctests, config and plug-in tests; no broker, nothing slow
check: lint
	$(PY) -m pytest -q -m "not kafka and not slow"

# ruff (rules in pyproject.toml) over the repository; mypy over drift/ and detectors/
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
