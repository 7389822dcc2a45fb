# neuralart: `make demo` and `make test` each work as the first command on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[dev,ray,video,cpu-cache]'
	@# The CPU block cache (neuralart/cpucache.py): compiled once per torch version; without
	@# a C++ compiler it says so in one line and neuralart runs without it.
	-$(BIN)/python -m neuralart.cpucache build
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p out
	$(BIN)/neuralart transfer examples/chelsea.jpg examples/starry_night.jpg \
		--preset classic --size 384 --iterations 200 --seed 0 -o out/demo.png
	@echo "The picture is at out/demo.png"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy neuralart

test: $(STAMP) lint
	$(BIN)/pytest -q

# The speed benchmark (about 15 minutes on 2 CPU cores); appends to BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
