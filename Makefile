# farmwatch: the two commands of the README, and helpers they use.
#   make demo   generate a small world, train, run the nightly flow, write a ban list
#   make test   run the whole test suite
# Both create (or reuse) .venv and install the pinned dependency set first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.farmwatch-installed
DEMO_ACCOUNTS ?= 20000
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint install check-java bench clean

demo: install check-java
	$(BIN)/farmwatch demo --accounts $(DEMO_ACCOUNTS)

test: install $(CHROMIUM) check-java
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

install: $(STAMP)

# pip installs only uv (pinned too), which installs the set: the same packages, faster
# (docs/performance.md). uv reads PyPI or UV_INDEX_URL, not pip's configuration.
# The optional JVM packages (jobs/core/session.py JVM_PACKAGES) are fetched once into Spark's Ivy
# cache (~/.ivy2.5.2); one that cannot be fetched is reported and the install still succeeds.
$(STAMP): pyproject.toml constraints.txt jobs/core/session.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "farmwatch needs Python 3.11 (set PYTHON=/path/to/python3.11)"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[test]'
	$(BIN)/python -m jobs.core.session fetch
	@touch $(STAMP)

# The browser tests (only they: `make demo` needs no browser) drive Debian's Chromium, never a
# downloaded one; `make test` installs it with apt when missing, which needs root.
$(CHROMIUM):
	@test "$$(id -u)" = 0 || { echo "$(CHROMIUM) is missing; as root: apt-get install -y chromium chromium-driver" >&2; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

check-java:
	@$(BIN)/python -c 'from jobs.core.session import check_java, JavaMissingError; import sys; \
	exec("try:\n    print(\"java\", check_java())\nexcept JavaMissingError as e:\n    sys.exit(str(e))")'

bench: install check-java
	$(BIN)/python benchmarks/bench_generate.py --accounts 1000000

clean:
	rm -rf var .pytest_cache
