# Dagwright: `make run` starts everything on the embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint mutants install migrate demo clean

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Dagwright needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py load_demos

run: demo
	@echo "Demo logins (local demo only):"
	@$(BIN)/python manage.py create_demo_users
	@exec bin/dev

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# not part of `make test`: breaks each promised rule in a scratch copy and runs the tests that name it
mutants: install
	$(BIN)/python bin/mutants $(MUTANTS_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf var/broker var/*.sqlite3* var/celerybeat-schedule*
