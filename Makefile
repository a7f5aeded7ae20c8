# `make help` lists every target with its variables.
# Development targets build .venv from requirements-dev.txt; deploy targets need only what make installs: they run
# tools/deploy_config.py with .venv's python when there is one, else with a small .venv-cli holding the AWS CLI
# (which brings botocore and PyYAML) and boto3, at requirements-dev.txt's pins.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CLI_VENV := .venv-cli
CHECKOV := $(VENV)/checkov/bin/checkov
# AWS: the CLI as the user calls it; the tool reads its --profile, --region, --endpoint-url (AWS='aws --profile dev').
AWS    ?= aws
# The deploy targets' python: .venv's (development), else .venv-cli's (made once by make cli).
TOOL_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(CLI_VENV)/bin/python)

SIZES      ?= 50 200 1000
LATENCY_MS ?= 30
PROPAGATION_S ?= 0
PORT       ?= 5000

# Deployment: FUNCTION is never guessed; every deploy target asks for it. The deploy targets run
# tools/deploy_config.py, which checks every value against what it names and calls AWS with boto3's clients: no
# value is ever spliced into shell text. Make keeps each value given on the command line as typed (never
# expanded: `$(...)` in a value is text) and hands it over in the environment, with the names of the function's
# settings given (GIVEN_SETTINGS). Each value and its default is declared in tools/deploy_values.py
# (`deploy_config.py TARGET --help` says them); REGION defaults to AWS_DEFAULT_REGION or AWS_REGION.
DEPLOY_VALUES := FUNCTION STACK ROLE REGION ACCOUNT_ID TIMEOUT MEMORY RETRIES SCHEDULE SINCE PREFIX KMS_KEY_ID \
  USER_PATH TOPIC EVENT SECRET OUS REGIONS ARTIFACT_PREFIX STACK_SET CALL_AS CANARY FAILURE_PERCENT MAX_PERCENT \
  OVERRIDES ORG_ID LOG_GROUP DAYS CENTRAL_PROFILE OUTPUT ROLES OWNERS
# The Makefile's own variables; every other NAME=VALUE on the command line is a setting of the function,
# passed to tools/deploy_config.py, which checks names and values with the function's own settings table
# (a typo is refused with the nearest name; NAME= removes the setting); for org-deploy and org-update, each is
# one of template.yaml's parameters by name (SecretNames=...), checked with the template's. No list is kept here.
MAKE_OWN := $(DEPLOY_VALUES) AWS PYTHON SIZES LATENCY_MS PROPAGATION_S VERBOSE PORT MODEL_EXAMPLES MODEL_STEPS
# A variable name make may export: letters, digits and '_' only (anything else is left out, and so refused).
NAME_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N O P Q R S T U V W X Y Z \
  0 1 2 3 4 5 6 7 8 9 _
strip-chars = $(if $(2),$(call strip-chars,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
is-name = $(if $(call strip-chars,$(1),$(NAME_CHARS)),,$(1))
COMMAND_LINE := $(sort $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(call is-name,$(v)))))
# Each value as typed: make's own $(value ...), kept as a simple variable, so no later use expands it again.
$(foreach v,$(COMMAND_LINE),$(eval override $(v) := $$(value $(v))))
export GIVEN_SETTINGS := $(filter-out $(MAKE_OWN),$(COMMAND_LINE))
export $(COMMAND_LINE) AWS SIZES LATENCY_MS PROPAGATION_S PORT
DEPLOY := $(TOOL_PYTHON) tools/deploy_config.py
# The targets that only run the tool (`deploy_config.py --targets` lists each with its line for make help); those
# of them that upload dist/lambda.zip are built after make package. This list and DEPLOY_VALUES are the tool's
# declarations' names (`deploy_config.py --names targets|values`; a test keeps them equal, and make reads no
# program to know them: every make run would pay for it).
DEPLOY_TARGETS := policy create configure deploy schedule exposed-rule invoke report alarms pause resume logs \
  destroy rollback skip unskip status org-package org-deploy org-update org-status org-remove org-report
PACKAGED := create deploy org-package org-deploy org-update

.PHONY: help demo test fuzz lint bench package release local-aws clean cli $(DEPLOY_TARGETS) \
  $(addprefix check-,$(DEPLOY_TARGETS))

help:  ## this list
	@echo "make TARGET [VAR=value ...]"
	@{ grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/'; \
	  $(PYTHON) tools/deploy_config.py --targets; } | expand -t 14
	@echo "Deploy variables: FUNCTION (required) REGION ROLE SEC SECRET STACK TOPIC ACCOUNT_ID PREFIX KMS_KEY_ID"
	@echo "  USER_PATH EVENT OUTPUT ROLES SINCE SCHEDULE TIMEOUT MEMORY RETRIES, and the function's settings by name:"
	@echo "  DRY_RUN GRACE_HOURS ROTATE_AFTER_DAYS ..."
	@echo "Organisation (org-*): OUS REGIONS ARTIFACT_PREFIX STACK_SET CALL_AS CANARY FAILURE_PERCENT MAX_PERCENT"
	@echo "  OVERRIDES ORG_ID LOG_GROUP DAYS CENTRAL_PROFILE, and template.yaml's parameters by name: SecretNames=..."
	@echo "Bench variables: SIZES LATENCY_MS PROPAGATION_S. Demo: VERBOSE=1 shows the function's log lines."

$(VENV)/.installed: requirements-dev.txt
	@echo "building .venv from requirements-dev.txt (about a minute, once)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(CLI_VENV)/bin/python:
	@echo "installing the AWS CLI and boto3 into .venv-cli (about 70 MB, once)..."
	$(PYTHON) -m venv $(CLI_VENV)
	$(CLI_VENV)/bin/pip install --quiet --disable-pip-version-check \
	  "$$(grep '^awscli==' requirements-dev.txt)" "$$(grep '^boto3==' requirements-dev.txt)"

cli: $(TOOL_PYTHON)  ## the python the deploy targets run (.venv's, else .venv-cli: the AWS CLI and boto3)

demo: $(VENV)/.installed  ## rotate demo users' keys on a local moto server (VERBOSE=1: with log lines)
	$(BIN)/python tools/demo.py

test: $(VENV)/.installed  ## run the test suite
	$(BIN)/python -m pytest -n auto --durations=5

fuzz: $(VENV)/.installed  ## the model-based test, long and random (MODEL_EXAMPLES, default 300; MODEL_STEPS, 50)
	MODEL_RANDOM=1 MODEL_EXAMPLES="$${MODEL_EXAMPLES:-300}" MODEL_STEPS="$${MODEL_STEPS:-50}" \
	  $(BIN)/python -m pytest -n auto tests/test_model.py -p no:cacheprovider

bench: $(VENV)/.installed  ## rotate SIZES secrets, each call behind LATENCY_MS; print figures
	set -f; $(BIN)/python tools/bench.py $$SIZES --latency-ms "$$LATENCY_MS" --propagation-s "$$PROPAGATION_S"

lint: $(VENV)/.installed $(CHECKOV)  ## static checks: code, CloudFormation templates (cfn-lint, checkov), the role's policy
	$(BIN)/ruff check .
	$(BIN)/cfn-lint template.yaml central.yaml
	$(CHECKOV) --file template.yaml --framework cloudformation --compact --quiet --skip-download
	$(CHECKOV) --file central.yaml --framework cloudformation --compact --quiet --skip-download
	$(BIN)/python tools/lint_policy.py LambdaExecutionRole.json

# checkov pins a boto3 older than the tests': a virtualenv of its own, inside .venv, at requirements-dev.txt's pin.
CHECKOV_PIN = $$(sed -n 's/^\# *\(checkov==[0-9.]*\)$$/\1/p' requirements-dev.txt)
$(CHECKOV): requirements-dev.txt
	@echo "building .venv/checkov for make lint (once)..."
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --disable-pip-version-check "$(CHECKOV_PIN)"
	touch $@

package: dist/lambda.zip  ## the zip Lambda runs: lambda_function.py alone (boto3 is in the runtime)

dist/lambda.zip: lambda_function.py
	mkdir -p dist
	rm -f $@
	$(PYTHON) -m zipfile -c $@ lambda_function.py

# A release a platform team pins: the function and the template named by VERSION, and their checksums. Built
# byte for byte the same from the same sources (the zip's dates fixed), so a checksum names the release.
release:  ## dist/iam-key-rotation-VERSION.zip, dist/template-VERSION.yaml and dist/SHA256SUMS (sha256sum -c checks them)
	@$(PYTHON) tools/release.py

# Each deploy target's values, checked before anything is called (exit 2 when one is refused); then the target.
# The tool checks them itself before its first call; a target that uploads the zip checks them first on its own
# (check-TARGET), before make builds the zip. (A check of its own for every target cost a Python and boto3 each.)
$(addprefix check-,$(DEPLOY_TARGETS)): check-%: cli
	@$(DEPLOY) --check $*

.SECONDEXPANSION:
$(DEPLOY_TARGETS): %: $$(if $$(filter $$*,$(PACKAGED)),check-% package) cli
	@$(DEPLOY) $@

local-aws:  $(VENV)/.installed  ## a local moto server standing in for AWS, running the function's invocations in-process: prints the variables to export
	$(BIN)/python tools/local_aws.py "$$PORT"

clean:  ## remove the virtualenvs and build output
	rm -rf $(VENV) $(CLI_VENV) dist .pytest_cache .ruff_cache
