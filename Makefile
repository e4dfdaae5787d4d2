# `make` alone lists the targets. Python dependencies go into .venv from the lock files.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
LOADTEST_VENV ?= .venv-loadtest
PY := $(VENV)/bin/python
REPLICAS ?= 3
PORT ?= 8080
WORKERS ?= 1
AMQP_URL ?=
# The private RabbitMQ's port; unset: scripts/stack.py's default (5673).
AMQP_PORT ?=
PYTEST_ARGS ?=

.PHONY: help install run lint test test-unit test-integration soak clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/dev.lock
	@echo "installing the pinned Python dependencies into $(VENV) (requirements/dev.lock)..."
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.lock
	touch $@

node_modules/.installed: package.json package-lock.json
	@echo "installing the pinned Node packages into node_modules (package-lock.json)..."
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed ## install Python (.venv) and Node dependencies

# The stack itself needs no Node packages: the page's Socket.IO client is committed (web/static/vendor/).
run: $(VENV)/.installed ## run the whole stack natively on 127.0.0.1:$(PORT) (PORT, REPLICAS, WORKERS, AMQP_URL, AMQP_PORT)
	$(PY) -m scripts.stack --replicas $(REPLICAS) --port $(PORT) --workers $(WORKERS) --amqp-url "$(AMQP_URL)" \
		$(if $(AMQP_PORT),--amqp-port $(AMQP_PORT))

lint: $(VENV)/.installed ## ruff (pinned in requirements/dev.lock, rules in pyproject.toml) on every Python file
	$(VENV)/bin/ruff check .

test: install $(LOADTEST_VENV)/.installed ## run every test against the real stack (this is what CI runs)
	scripts/pytest.sh $(PY) tests $(PYTEST_ARGS)

# node_modules: tests/unit/test_vendored_js.py compares the committed client with the pinned one.
test-unit: $(VENV)/.installed node_modules/.installed ## unit tests only: no network, seconds
	scripts/pytest.sh $(PY) tests/unit $(PYTEST_ARGS)

test-integration: install ## integration tests: private RabbitMQ, nginx, 3 replicas, the worker
	scripts/pytest.sh $(PY) tests/integration $(PYTEST_ARGS)

# `make test` runs the soak for its default length (tests/soak/test_hostile_soak.py); this is the long run.
SOAK_SECONDS ?= 600
soak: $(VENV)/.installed ## hostile clients for SOAK_SECONDS (600) while healthy ones measure; figures in test-artifacts/soak.json
	SOAK_SECONDS=$(SOAK_SECONDS) scripts/pytest.sh $(PY) tests/soak $(PYTEST_ARGS)

vendor-js: node_modules/.installed ## copy the pinned Socket.IO client and admin UI into web/static/vendor/ (commit them)
	scripts/vendor_js.sh
	scripts/vendor_admin_ui.sh

clean: ## remove the virtualenv, node_modules and test artifacts
	rm -rf $(VENV) node_modules test-artifacts .pytest_cache

# The containerized stack (docker-compose.yml); scripts/compose.sh picks compose v2 or v1.
.PHONY: up down logs ps scale test-compose

up: ## build and start the containers on 127.0.0.1:HTTP_PORT (8080) with REPLICAS web replicas (.env)
	scripts/compose.sh up-wait --build --scale web=$(REPLICAS)

down: ## stop the containers and remove their network and volumes
	scripts/compose.sh down -v --remove-orphans

logs: ## follow the containers' logs
	scripts/compose.sh logs -f --tail=100

ps: ## list the containers and their health
	scripts/compose.sh ps

scale: ## change the number of web replicas of the running containers: make scale REPLICAS=5
	scripts/compose.sh up-wait --no-build --no-recreate --scale web=$(REPLICAS)

test-compose: $(VENV)/.installed ## build the images and test the containerized stack on a real engine
	scripts/pytest.sh $(PY) tests/compose $(PYTEST_ARGS)

# Beyond one machine (docs/deployment.md): a three-node RabbitMQ cluster, Docker Swarm, Kubernetes.
CLUSTER_COMPOSE := COMPOSE_FILE=docker-compose.yml:deploy/compose/rabbitmq-cluster.yml
.PHONY: up-cluster test-cluster test-swarm test-kubernetes

up-cluster: ## the containers on a three-node RabbitMQ cluster (deploy/compose/rabbitmq-cluster.yml; .env needs RABBITMQ_ERLANG_COOKIE)
	$(CLUSTER_COMPOSE) scripts/compose.sh up-wait --build --scale web=$(REPLICAS)

test-cluster: $(VENV)/.installed ## the stack on a three-node RabbitMQ cluster, one node stopped under load (real engine)
	scripts/pytest.sh $(PY) tests/cluster $(PYTEST_ARGS)

test-swarm: $(VENV)/.installed ## deploy/swarm/stack.yml on a one-node Docker Swarm: spread, broadcast, worker, scale, rolling update
	scripts/pytest.sh $(PY) tests/swarm $(PYTEST_ARGS)

test-kubernetes: $(VENV)/.installed ## validate deploy/kubernetes (Kustomize base) offline against the Kubernetes schemas
	scripts/pytest.sh $(PY) tests/unit/test_kubernetes_manifests.py $(PYTEST_ARGS)

# Load tests (loadtest/): Locust and matplotlib in their own .venv-loadtest from
# requirements/loadtest.lock (LOADTEST_VENV, set at the top); the runner itself uses the app's
# .venv and starts the stack.
# Any runner option is a make variable named in capitals (CLIENTS=3000, SPAWN_RATE=..., DURATION=,
# SCENARIO=, TRANSPORTS=, BROADCAST_RATE=...); unset ones keep their defaults, defined once in
# loadtest/scenario.py (`$(PY) -m loadtest.run --help` lists them).
URL ?=
LOADTEST_ARGS ?=
LOADTEST_KNOBS := SCENARIO CLIENTS SPAWN_RATE DURATION DRAIN SETTLE_MAX TRANSPORTS PROCESSES \
	BROADCAST_RATE NOTIFY_RATE ROOM_SIZE ROOM_RATE ECHO_RATE
LOADTEST_RUN = $(PY) -m loadtest.run --replicas $(REPLICAS) $(strip $(foreach knob,$(LOADTEST_KNOBS),$(if \
	$($(knob)),--$(shell echo $(knob) | tr A-Z_ a-z-) $($(knob)))))
.PHONY: loadtest loadtest-compare

$(LOADTEST_VENV)/.installed: requirements/loadtest.lock
	@echo "installing Locust and matplotlib into $(LOADTEST_VENV) (requirements/loadtest.lock; once, about a minute)..."
	test -x $(LOADTEST_VENV)/bin/python || python3 -m venv $(LOADTEST_VENV)
	$(LOADTEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/loadtest.lock
	touch $@

loadtest: $(VENV)/.installed $(LOADTEST_VENV)/.installed ## load test (Locust, real Socket.IO clients): starts the stack unless URL=...; report in loadtest-results/
	$(LOADTEST_RUN) $(if $(URL),--url $(URL)) $(LOADTEST_ARGS)

loadtest-compare: $(VENV)/.installed $(LOADTEST_VENV)/.installed ## the same load test against this stack and the plain Flask-SocketIO recipe (loadtest/baseline/)
	$(LOADTEST_RUN) --compare-baseline $(LOADTEST_ARGS)

# The benchmark (bench/): this stack, the Flask-SocketIO recipe and a Node socket.io peer, side by
# side, loaded by Node socket.io-client processes. Knobs as for the load test, in capitals
# (CLIENTS=200 RATE=5 DURATION=5 SCENARIOS=fanout-10,idle-10k SYSTEMS=stack,node SECTION=before
# STACK_REV=<commit>: this stack as of that commit; for SCENARIOS=rooms-local-3,rooms-spread-12:
# ROOMS=10 ROOM_CLIENTS=20 ROOM_RATE=100 IDLE_SECONDS=6);
# unset ones keep bench/run.py's defaults (`$(PY) -m bench.run --help`).
BENCH_KNOBS := SCENARIOS SYSTEMS CLIENTS RATE DURATION WARMUP DRAIN GENERATORS CONNECT_RATE SECTION \
	STACK_REV ROOMS ROOM_CLIENTS ROOM_RATE IDLE_SECONDS
.PHONY: bench
bench: install $(LOADTEST_VENV)/.installed ## benchmark this stack vs the Flask-SocketIO recipe vs Node socket.io (CLIENTS, RATE, DURATION, SCENARIOS); updates docs/benchmarks.md
	$(PY) -m bench.run --replicas $(REPLICAS) $(strip $(foreach knob,$(BENCH_KNOBS),$(if $($(knob)),--$(shell echo $(knob) | tr A-Z_ a-z-) $($(knob)))))
