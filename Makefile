# pymachined — two commands on a fresh Debian 12 machine, as root:
#   make run    provision, then start pymachined on a private system bus
#   make test   provision, then run the whole suite in private namespaces

PYTHON ?= python3
VENV ?= .venv
APT_PACKAGES := dbus-daemon dbus-bin libglib2.0-bin systemd-container libnss-mymachines libnss-systemd \
	systemd-userdbd busybox-static util-linux procps iproute2 mmdebstrap polkitd btrfs-progs e2fsprogs xfsprogs acl
STAMP_APT := $(VENV)/.apt-stamp
STAMP_PIP := $(VENV)/.pip-stamp

.PHONY: all provision roots run test unit lint type check bench fuzz soak clean install uninstall

all: test

provision: $(STAMP_APT) $(STAMP_PIP)

$(STAMP_APT): Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "provision: installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,dev]'
	@touch $@

run: provision
	@scripts/run-private $(VENV)/bin/pymachined

PYTEST := $(VENV)/bin/python -m pytest -q -p no:cacheprovider -rs

test: provision roots
	@echo "== all tiers, this host's cgroup layout"
	@tests/harness/isolate $(PYTEST) tests
	@echo "== integration and differential tiers, pure cgroup2 layout"
	@PYMACHINED_CGROUP_LAYOUT=unified tests/harness/isolate $(PYTEST) tests/integration tests/differential
	@$(MAKE) --no-print-directory check

# The Debian roots of the booted and 257 tiers, built (or found cached) before the sandbox: inside it
# name resolution is pinned to files, so no mirror can be reached from there.
roots: provision
	@tests/harness/build-debian-root >/dev/null
	@tests/harness/build-debian-root --suite trixie >/dev/null

unit: provision
	@$(VENV)/bin/python -m pytest -q tests/unit

check: lint type

lint: provision
	@$(VENV)/bin/ruff check src tests $(wildcard bench)

type: provision
	@$(VENV)/bin/mypy

bench: provision
	@tests/harness/isolate $(VENV)/bin/python bench/run.py

fuzz: provision
	@tests/harness/isolate $(VENV)/bin/python bench/fuzz.py

soak: provision
	@tests/harness/isolate $(VENV)/bin/python bench/soak.py

install:
	@scripts/install

uninstall:
	@scripts/uninstall

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
