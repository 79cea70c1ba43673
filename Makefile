# The two commands a newcomer runs are `make demo` and `make test`; both set up .venv
# on first use. Everything else here is for the people building BlackTail.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CODE := protocol node verifier chain
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint typecheck pytest bench setup clean contracts dashboard
NODE_STAMP := node_modules/.installed-stamp

setup: $(STAMP)

# Reinstall whenever pyproject.toml changes, so a pin bump reaches every checkout.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Setting up $(VENV) (first run installs torch, numba and web3: a minute or two)..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The npm side (solc, OpenZeppelin, the hardhat JSON-RPC node) is needed to compile the
# contracts and by the tests; running the network needs only the committed artifacts.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is required (the contract toolchain): install node/npm" >&2; exit 1; }
	@echo "Installing the contract toolchain (npm ci)..."
	@npm ci --silent --no-audit --no-fund
	@touch $(NODE_STAMP)

# The dashboard's script: node/gateway/web/*.js and Chart.js bundled by esbuild into
# node/gateway/static/dist/ (not committed), which the gateway serves; nothing is fetched
# from a CDN at run time. Without it the pages still render, only without live updates.
DASHBOARD := node/gateway/static/dist/dashboard.js
dashboard: $(DASHBOARD)

$(DASHBOARD): $(NODE_STAMP) $(wildcard node/gateway/web/*.js)
	node_modules/.bin/esbuild node/gateway/web/main.js --bundle --minify --sourcemap \
		--format=iife --target=es2020 --log-level=warning --outfile=$@

# Compile chain/contracts/*.sol into chain/build/ (committed; a test checks they match).
contracts: $(NODE_STAMP)
	node chain/compile.js

demo: $(STAMP) dashboard
	$(BIN)/blacktail demo

test: dashboard lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check $(CODE) tests bench
	$(BIN)/ruff format --check $(CODE) tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(NODE_STAMP) dashboard
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) node_modules .blacktail .pytest_cache .mypy_cache .ruff_cache
