# fnbus — the two commands are `make up` and `make test`; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help up down status test unit lint bench bench-scale chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# Replicas for up/status/bench: make up INVOKERS=3 GATEWAYS=2 (docs/scaling.md).
INVOKERS ?=
GATEWAYS ?=
export INVOKERS GATEWAYS

up: ## install what is missing, start Kafka, PostgreSQL, Docker and the six services (INVOKERS=n GATEWAYS=m)
	@deploy/stack.sh up

down: ## stop everything `make up` started
	@deploy/stack.sh down

status: ## one line per component
	@deploy/stack.sh status

test: ## install what is missing, start the infrastructure, run lint, type checks and every test
	@deploy/stack.sh test

unit: ## unit tests only (no infrastructure)
	@deploy/stack.sh unit

lint: ## ruff and mypy
	@deploy/stack.sh lint

bench: ## benchmark harness (latency, throughput, cold start, deploy)
	@deploy/stack.sh bench

bench-scale: ## scale-out benchmark on a private stack: 1-3 invokers, 1-2 gateways, cold starts (SCALE_ARGS=--quick)
	@deploy/stack.sh bench-scale

chaos: ## fault injection on a private Kafka/PostgreSQL and private services (CHAOS_ARGS=--ci for the small run)
	@deploy/stack.sh chaos

clean: down ## stop everything and delete all local state (.fnbus)
	rm -rf .fnbus
