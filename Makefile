# tincap: `make train` and `make test` install into .venv first when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install train test test-slurm test-full bench docs clean-cache

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[dev,export,demo,trackers,docs]'
	touch $(STAMP)

# the first run a new user makes ends within 2 minutes on any CPU; ARGS="..." replaces it (experiments set their own)
ARGS ?= budget=2m
train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest -q

# against a real one-node SLURM cluster that the tests start (root, and Debian's slurm-wlm slurmdbd munge
# mariadb-server); skipped, with the reason, without them
test-slurm: install
	$(PY) -m pytest -q -m slurm

test-full: install
	$(PY) -m pytest -q -m ""

bench: install
	$(PY) benchmarks/run.py $(ARGS)

# the documentation site on http://127.0.0.1:8000 (mkdocs.yml, docs/)
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean-cache:
	rm -rf .cache
