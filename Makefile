# Every set-up step lives here: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seglab-installed
DEMO_OUT ?= demo-output
DATA ?= ../shared/data
# Zoo recipes at CPU scale by default; `make zoo ZOO_SCALE=` trains the accelerator-sized
# jewellery recipe (bf16, 320x320, batch 32) on a GPU machine.
ZOO_SCALE ?= -cpu
ZOO_RUNS ?= runs/zoo
ZOO_STEEL ?= steel-defects-long
# ZOO_FP32=1: the bf16 stages (jewellery's third to fifth, steel's second, all three of
# magnetic-tile's) in fp32 on any CPU (on CPUs without AVX512_BF16 or AMX seglab train
# already runs them in fp32, as emulated bf16 autocast is ~100x slower; with either it is
# 2-3x faster than fp32); with ZOO_STEEL=steel-defects steel's first stage is fp32 too.
ZOO_FP32 ?=

BROWSER := /usr/bin/chromium /usr/bin/chromedriver
APT = SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y --no-install-recommends $(1) \
	  || { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends $(1); }

.PHONY: install demo test lint bench clean browser postgres serve zoo zoo-jewellery-cutout zoo-steel-defects \
	zoo-magnetic-tile

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir -c constraints.txt -e ".[dev,ray,postgres]"
	touch $(STAMP)

install: $(STAMP)

# The browser test drives Debian's headless Chromium; installed once, as the tests need it.
$(BROWSER):
	@command -v apt-get >/dev/null || { echo "need Debian's chromium and chromium-driver"; exit 1; }
	@echo "make test: installing Debian's chromium and chromium-driver system-wide with apt-get (once; the browser test drives them; ~300 MB)"
	$(call APT,chromium chromium-driver)

browser: $(BROWSER)

# The replica tests start a real PostgreSQL server (initdb/pg_ctl in a temporary folder as
# an unprivileged user); Debian keeps its programs in /usr/lib/postgresql/<version>/bin.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "need Debian's postgresql"; exit 1; }; \
	  echo "make test: installing Debian's postgresql with apt-get (once; the replica tests start a server)"; \
	  $(call APT,postgresql); }

demo: $(STAMP)
	$(BIN)/seglab demo --out $(DEMO_OUT)

test: $(STAMP) $(BROWSER) postgres
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

serve: $(STAMP)
	$(BIN)/seglab serve --data-dir $(DEMO_OUT)/service

# One command per zoo model: train in stages (from scratch, then each stage on from the
# last one's model with its own recipe; each resumes after a kill; jewellery six,
# steel two, magnetic tiles three), measure on held-out data, pack the fp16 folder into
# src/seglab/models/zoo/NAME with its card.
zoo: zoo-jewellery-cutout zoo-steel-defects zoo-magnetic-tile

zoo-jewellery-cutout: $(STAMP)
	$(BIN)/seglab train jewellery-cutout$(ZOO_SCALE) --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout --resume
	$(BIN)/seglab train jewellery-cutout-cpu-continue --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-2 \
	  --init $(ZOO_RUNS)/jewellery-cutout/model --resume
	$(BIN)/seglab train jewellery-cutout-cpu-bf16 --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-3 \
	  --init $(ZOO_RUNS)/jewellery-cutout-2/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-384 --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-4 \
	  --init $(ZOO_RUNS)/jewellery-cutout-3/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-448 --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-5 \
	  --init $(ZOO_RUNS)/jewellery-cutout-4/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-512 --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-6 \
	  --init $(ZOO_RUNS)/jewellery-cutout-5/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	# v7: six seventh-stage tries from stage 6 (each about an hour on 2 cores), then the
	# mean of the seven models' weights (`seglab soup`), which is what is released.
	$(BIN)/seglab train jewellery-cutout-cpu-512 --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-7a \
	  --init $(ZOO_RUNS)/jewellery-cutout-6/model --resume --set data.synth.stream_seed=207 \
	  --set train.lr=0.0002 --set train.epochs=3 --set train.max_minutes=45 $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-dice --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-7b \
	  --init $(ZOO_RUNS)/jewellery-cutout-6/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-bilinear --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-7c \
	  --init $(ZOO_RUNS)/jewellery-cutout-6/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-reflect --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-7d \
	  --init $(ZOO_RUNS)/jewellery-cutout-7c/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-variety --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-7e \
	  --init $(ZOO_RUNS)/jewellery-cutout-7d/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train jewellery-cutout-cpu-clean --data $(DATA) --out $(ZOO_RUNS)/jewellery-cutout-7f \
	  --init $(ZOO_RUNS)/jewellery-cutout-6/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab soup $(ZOO_RUNS)/jewellery-cutout-6/model \
	  $(foreach k,a b c d e f,$(ZOO_RUNS)/jewellery-cutout-7$(k)/model) --out $(ZOO_RUNS)/jewellery-cutout-7/model
	$(BIN)/python tools/release_zoo.py jewellery-cutout $(ZOO_RUNS)/jewellery-cutout-7/model --data $(DATA)

# Two stages in bf16, ~80 + ~65 min on a 2-core CPU with AMX or AVX512_BF16 (or a GPU):
# flips, then on from that model with the whole dihedral group. Without either, bf16 is
# slower than fp32: ZOO_STEEL=steel-defects and ZOO_FP32=1 train both in fp32 (~2 h + ~2 h).
zoo-steel-defects: $(STAMP)
	$(BIN)/seglab train $(ZOO_STEEL) --data $(DATA)/neu-seg --out $(ZOO_RUNS)/steel-defects --resume
	$(BIN)/seglab train steel-defects-d4 --data $(DATA)/neu-seg --out $(ZOO_RUNS)/steel-defects-2 \
	  --init $(ZOO_RUNS)/steel-defects/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/python tools/release_zoo.py steel-defects $(ZOO_RUNS)/steel-defects-2/model --data $(DATA)

# Three stages in bf16, ~47 + ~37 + ~30 min on 2 cores with AVX512_BF16 or AMX
# (ZOO_FP32=1 without either): whole tiles at 256x256, lr 2e-3, 1e-3, 5e-4.
zoo-magnetic-tile: $(STAMP)
	$(BIN)/seglab train magnetic-tile-zoo --data $(DATA)/magnetic-tile --out $(ZOO_RUNS)/magnetic-tile \
	  --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train magnetic-tile-zoo-2 --data $(DATA)/magnetic-tile --out $(ZOO_RUNS)/magnetic-tile-2 \
	  --init $(ZOO_RUNS)/magnetic-tile/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/seglab train magnetic-tile-zoo-3 --data $(DATA)/magnetic-tile --out $(ZOO_RUNS)/magnetic-tile-3 \
	  --init $(ZOO_RUNS)/magnetic-tile-2/model --resume $(if $(ZOO_FP32),--set train.precision=32)
	$(BIN)/python tools/release_zoo.py magnetic-tile $(ZOO_RUNS)/magnetic-tile-3/model --data $(DATA)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
