# ctripd developer entry points. Everything installs itself on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TOOLS   := tools
ANVIL   := $(TOOLS)/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
PYTEST_WORKERS ?= 2

export CTRIPD_ANVIL := $(abspath $(ANVIL))

.PHONY: install devtools dev test lint typecheck pytest browser tokens delegate feeds bench faults clean

# Production: the package (not editable) and its runtime dependencies only: no dev extras, no
# npm, no Anvil. Run again after `git pull` to install the new code.
install:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet .
	rm -f $(VENV)/.installed-dev

# Development: the package editable with the dev extras, and Anvil from npm.
devtools: $(VENV)/.installed-dev $(TOOLS)/node_modules/.installed

$(VENV)/.installed-dev: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(TOOLS)/node_modules/.installed: $(TOOLS)/package.json $(TOOLS)/package-lock.json
	cd $(TOOLS) && npm ci --no-fund --no-audit --loglevel=error
	test -x $(ANVIL)
	touch $@

dev: devtools
	$(BIN)/ctripd dev

# ruff, and the layering of the package (import-linter contracts in pyproject.toml).
lint: devtools
	$(BIN)/ruff check ctripd tests bench
	$(BIN)/ruff format --check ctripd tests bench
	$(BIN)/lint-imports

typecheck: devtools
	$(BIN)/mypy

pytest: devtools browser
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The checkout page's browser tests drive Debian's chromium: installed here as root with apt-get;
# elsewhere they are skipped, and pytest's summary says why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "browser: chromium is missing and apt-get is unusable here (not root?): the browser tests will be skipped"; \
	fi

test: lint typecheck pytest

# The fault suite (tests/faults) at full size; `make test` runs its short version. Figures go to
# test-artifacts/faults-*.json.
faults: export CTRIPD_FAULTS_FULL := 1
faults: devtools browser
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile tests/faults

# Rebuild the dev/test contract artifacts (ctripd/dev/contracts/build, shipped in the package
# for `ctripd dev`) from their sources in contracts/.
tokens: devtools
	cd contracts && ../$(TOOLS)/node_modules/.bin/solcjs --bin --abi --optimize -o ../ctripd/dev/contracts/build TestToken.sol UsdtLikeToken.sol Forwarder.sol FalseToken.sol

# Rebuild the sweep delegate's artifact (ctripd/chain/contracts/SweepDelegate.json, shipped in
# the package: ctripd deploys it and checks deployed delegates against it) from
# contracts/SweepDelegate.sol.
delegate: devtools
	$(BIN)/python contracts/build_delegate.py

# Rebuild the price-feed aggregator artifact (Chainlink-style, for the rate tests and `ctripd dev`).
feeds: devtools
	cd contracts && ../$(TOOLS)/node_modules/.bin/solcjs --bin --abi --optimize -o ../ctripd/dev/contracts/build PriceFeed.sol

bench: devtools
	$(BIN)/python -m bench.create_payments
	$(BIN)/python -m bench.scan
	$(BIN)/python -m bench.webhooks

clean:
	rm -rf $(VENV) $(TOOLS)/node_modules .pytest_cache .mypy_cache .ruff_cache
