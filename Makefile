# Two commands: `make demo` (set up + run the nightly pipeline on built-in data) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast chromium clean

install: $(STAMP)

# Constraints pin the CPU build of torch on this kind of machine and versions known to work together;
# pyproject.toml keeps open ranges for users elsewhere.
# pip's own chatter (this machine's pip config names wheel folders that may not exist: a warning per package)
# goes to .venv/install.log; a failed install shows its last lines.
$(STAMP): pyproject.toml constraints.txt
	@echo "installing into $(VENV) (a few minutes the first time; pip's log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -c constraints.txt -e ".[test,pretrained]" > $(VENV)/install.log 2>&1 || \
	  { tail -n 40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

demo: install
	@$(BIN)/aigc nightly --config configs/demo.yaml

# The whole suite, the reliability suite's heavier variants included (CI runs this).
test: install chromium
	$(BIN)/python -m pytest -q -m "heavy or not heavy" $(PYTEST_ARGS)

# Without the heavy variants (pytest's default here): quicker while developing.
test-fast: install chromium
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The report test renders a page in headless Chromium: Debian's package, installed when missing
# (sudo when not root and sudo exists; apt-get update only if the first install fails).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
	  { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }; }

clean:
	rm -rf runs .pytest_cache
