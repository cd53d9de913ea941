# The two commands a fresh machine needs:  make demo  and  make test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: sox and TTS voices (flite, espeak-ng, festival + festvox) for synthetic audio,
# PortAudio for the terminal microphone, Chromium for the browser tests, a C++ tool chain, cmake and
# boost to build KenLM's lmplz for the LM recipe.
DEBIAN_PACKAGES := build-essential cmake libboost-program-options-dev libboost-system-dev \
	libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev libportaudio2 sox flite \
	espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts chromium
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: demo test test-fast system-deps install kenlm-tools clean

demo: install
	$(BIN)/python demo.py --host $(HOST) --port $(PORT)

test: install kenlm-tools
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install -qq --no-deps --editable .  # the ds2 command, and python -m ds2 from any folder
	touch $@

# KenLM's lmplz and build_binary, compiled once into ~/.cache/ds2/kenlm for the LM recipe and its
# tests; without a compiler and boost those tests skip and say why.
kenlm-tools: install
	-@$(BIN)/python -c "from train.lm import kenlm_binaries; kenlm_binaries()"

# Installs the Debian packages when run as root; otherwise says which to install.
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "note: not root, so these Debian packages were not installed: $$missing"; \
		echo "      (sudo apt-get install $$missing); without them the app and core tests still run," ; \
		echo "      but browser tests, the LM build and the terminal microphone are skipped."; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts ds2.egg-info
