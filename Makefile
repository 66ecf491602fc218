# landpipe: `make demo` loads the sample delivery, `make test` runs the tests.
# Both install what is missing first: PostgreSQL + PostGIS from the distribution's packages,
# and the Python dependencies into .venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
SAMPLE := samples/phu_thuy_22924/thua_dat_22924.shp

.PHONY: setup system-packages demo test notebook lint bench clean

## setup: install PostgreSQL + PostGIS (if missing) and landpipe into .venv
setup: system-packages $(VENV)/.installed

system-packages:
	@if ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    || ! $(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1; then \
	  echo "installing PostgreSQL, PostGIS and python3-venv from the distribution's packages"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    postgresql postgresql-postgis python3-venv >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Chromium (the report tests render the HTML report headless)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium >/dev/null; \
	fi
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 'landpipe needs Python 3.11 or newer (found ' + sys.version.split()[0] + ')')"

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $@

## demo: generate the sample delivery and load it into the embedded PostGIS
demo: setup
	$(BIN)/landpipe sample $(SAMPLE)
	$(BIN)/landpipe load $(SAMPLE)

## test: run the test suite against a real PostGIS and a real Prefect server
test: setup
	$(BIN)/python -m pytest -q

## notebook: Jupyter Lab on notebooks/, on the same register (installs Jupyter into .venv)
notebook: setup
	$(BIN)/python -m pip install -q -e '.[notebooks]'
	$(BIN)/jupyter lab $$([ "$$(id -u)" -eq 0 ] && echo --allow-root) notebooks/

## bench: the benchmarks' peers (ogr2ogr from gdal-bin) and a run of each at 100,000 parcels
bench: setup
	@command -v ogr2ogr >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdal-bin >/dev/null; }
	for b in read load validate topology register revalidate; do \
	  $(BIN)/python -m benchmarks.bench_$$b --parcels 100000 || exit 1; done

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	-$(BIN)/landpipe db stop
	rm -rf samples
