# mailshift — the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LAB_DIR ?= $(CURDIR)/.lab
export MAILSHIFT_LAB_DIR := $(LAB_DIR)
export AIRFLOW_HOME ?= $(LAB_DIR)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONPATH := $(CURDIR)/include

# Debian packages the lab needs: binary -> package. Cyrus's imapd and pop3d conflict with Dovecot's
# (both provide imap-server / pop3-server), so they are unpacked from Debian's own .debs into
# CYRUS_ROOT instead of installed; cyrus-common (master, lmtpd, libraries) installs normally.
CYRUS_ROOT ?= /opt/mailshift-lab/cyrus
export MAILSHIFT_LAB_CYRUS_ROOT := $(CYRUS_ROOT)
SYSTEM_PACKAGES := postgresql dovecot-imapd dovecot-pop3d dovecot-lmtpd bind9 bind9-dnsutils redis-server postfix openssl chromium chromium-driver fonts-ipafont-gothic cyrus-common sasl2-bin dovecot-sieve dovecot-managesieved
SYSTEM_BINARIES := /usr/lib/postgresql/15/bin/initdb /usr/sbin/dovecot /usr/lib/dovecot/imap-login /usr/lib/dovecot/pop3 /usr/lib/dovecot/lmtp /usr/sbin/named /usr/bin/dig /usr/bin/nsupdate /usr/bin/redis-server /usr/sbin/postfix /usr/bin/chromium /usr/bin/chromedriver /usr/lib/cyrus/bin/master $(CYRUS_ROOT)/usr/lib/cyrus/bin/imapd $(CYRUS_ROOT)/usr/lib/cyrus/bin/pop3d /usr/lib/cyrus/bin/lmtpd /usr/sbin/saslpasswd2 /usr/lib/dovecot/managesieve-login

.PHONY: all venv system-deps lab-up lab-down lab-status airflow demo test test-unit test-distributed lint bench clean

all: venv

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $@

venv: $(VENV)/.installed

system-deps:
	@missing=""; for b in $(SYSTEM_BINARIES); do [ -x $$b ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(SYSTEM_PACKAGES) (missing:$$missing)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	    systemctl disable --now dovecot named bind9 redis-server postgresql postfix cyrus-imapd >/dev/null 2>&1 || true; \
	    if [ ! -x $(CYRUS_ROOT)/usr/lib/cyrus/bin/imapd ]; then \
	      d=$$(mktemp -d) && chmod 755 $$d && (cd $$d && apt-get download -qq cyrus-imapd cyrus-pop3d) && \
	      mkdir -p $(CYRUS_ROOT) && for f in $$d/*.deb; do dpkg-deb -x $$f $(CYRUS_ROOT); done && rm -rf $$d; \
	    fi; \
	  else \
	    echo "missing:$$missing — run as root, or: sudo apt-get install $(SYSTEM_PACKAGES)"; exit 1; \
	  fi; \
	fi

lab-up: venv system-deps
	$(PY) -m lab up

lab-down:
	@if [ -x $(PY) ]; then $(PY) -m lab down; else echo "no .venv: nothing of the lab can be running"; fi

lab-status: venv
	$(PY) -m lab status

airflow: lab-up
	$(PY) -m lab.airflow_services

demo: lab-up
	(umask 077; $(PY) -m lab.airflow_home > $(LAB_DIR)/airflow.env) && chmod 600 $(LAB_DIR)/airflow.env && source $(LAB_DIR)/airflow.env && $(PY) -m lab.demo

lint: venv
	$(VENV)/bin/ruff check include dags plugins tests bench

test: lab-up lint
	(umask 077; $(PY) -m lab.airflow_home > $(LAB_DIR)/airflow.env) && chmod 600 $(LAB_DIR)/airflow.env && source $(LAB_DIR)/airflow.env && MAILSHIFT_REQUIRE_LAB=1 $(VENV)/bin/pytest -q tests

test-distributed: lab-up
	MAILSHIFT_RUN_DISTRIBUTED=1 MAILSHIFT_REQUIRE_LAB=1 $(VENV)/bin/pytest -q -s tests/e2e/test_distributed.py

test-unit: venv
	$(VENV)/bin/pytest -q tests/unit

# The quick set; each bench/*.py documents its full run, and bench/README.md the figures.
bench: lab-up
	$(PY) bench/copy_bench.py --quick --repeat 1
	$(PY) bench/verify_bench.py
	$(PY) bench/plan_bench.py --runs 3
	$(PY) bench/kill_soak.py --kills 50

clean: lab-down
	rm -rf $(VENV) $(LAB_DIR)
