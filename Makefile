# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install the project into it (idempotent:
# a stamp file tracks pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EDGEZOO := $(VENV)/bin/edgezoo
PYTEST_ARGS ?=

.PHONY: install demo test bench gpu-smoke clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is not pinned: pip takes the registry's newest torch + torchvision pair
# (a local CPU-only torch wheel cannot load the registry's torchvision).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser test (Debian packages); skipped quietly where apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1) \
	    || echo "chromium not installed: the browser test will skip"; }

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The main job on the embedded defaults: ImageNet EfficientNet-Lite0's stage readout fitted to the flower photos
# (4 minutes), evaluated against its untrained self, exported, published (local hub), then the demo on
# http://127.0.0.1:7860 over the held-out photos. Running it again skips finished stages.
demo: install
	$(EDGEZOO) run --data flowers --recipe photos-readout --repo edgezoo/lite0-flowers-readout

bench: install
	$(PY) benchmarks/pretrain_speed.py

# The GPU window's command (benchmarks/gpu_window.py) on this CPU, tiny: run it before spending device minutes.
gpu-smoke: install
	$(PY) benchmarks/gpu_window.py runs/gpu-window-smoke --smoke

clean:
	rm -rf $(VENV) runs .pytest_cache
