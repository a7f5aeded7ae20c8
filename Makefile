# `make help` lists every target with its variables.
# Development targets build .venv from requirements-dev.txt; deploy targets need only the AWS CLI:
# an `aws` on the PATH, else a small .venv-cli holding just the CLI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CLI_VENV := .venv-cli
AWS    ?= $(or $(shell command -v aws 2>/dev/null),$(CLI_VENV)/bin/aws)

SIZES      ?= 50 200 1000
LATENCY_MS ?= 30
PROPAGATION_S ?= 0

# Deployment. FUNCTION is never guessed: every deploy target asks for it.
FUNCTION ?=
ROLE     ?=
SEC      ?=
REGION   ?= $(or $(AWS_DEFAULT_REGION),$(AWS_REGION))
TIMEOUT  ?= 900
MEMORY   ?= 256
SCHEDULE ?= cron(0 6 * * ? *)
RETRIES  ?= 2
EVENT    ?= events/dry-run.json
SINCE    ?= 60
ACCOUNT_ID ?=
PREFIX   ?= iam-keys/
KMS_KEY_ID ?=
USER_PATH ?= /key-rotation/
# The AWS CLI v1 reads only AWS_DEFAULT_REGION.
ifneq ($(REGION),)
export AWS_DEFAULT_REGION := $(REGION)
endif
# The Makefile's own variables; every other NAME=VALUE on the command line is a setting of the function,
# passed to tools/deploy_config.py, which checks names and values with the function's own settings table
# (a typo is refused with the nearest name; NAME= removes the setting). No list of settings is kept here.
MAKE_OWN := FUNCTION ROLE REGION TIMEOUT MEMORY SCHEDULE RETRIES EVENT SINCE ACCOUNT_ID PREFIX KMS_KEY_ID \
  AWS PYTHON SIZES LATENCY_MS PROPAGATION_S VERBOSE USER_PATH STACK TOPIC PORT
COMMAND_LINE = $(sort $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
GIVEN_SETTINGS = $(foreach v,$(filter-out $(MAKE_OWN),$(COMMAND_LINE)),'$(v)=$($(v))')

.PHONY: help demo test lint bench package policy create configure deploy schedule invoke report pause resume alarms \
  local-aws logs \
  destroy clean cli

help:  ## this list
	@echo "make TARGET [VAR=value ...]"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 14
	@echo "Deploy variables: FUNCTION (required) REGION ROLE SEC ACCOUNT_ID PREFIX KMS_KEY_ID EVENT SINCE SCHEDULE"
	@echo "  TIMEOUT MEMORY RETRIES, and the function's settings by name: DRY_RUN GRACE_HOURS ROTATE_AFTER_DAYS ..."
	@echo "Bench variables: SIZES LATENCY_MS PROPAGATION_S. Demo: VERBOSE=1 shows the function's log lines."

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(CLI_VENV)/bin/aws:
	$(PYTHON) -m venv $(CLI_VENV)
	$(CLI_VENV)/bin/pip install --quiet --disable-pip-version-check "$$(grep '^awscli==' requirements-dev.txt)"

cli: $(if $(findstring $(CLI_VENV),$(AWS)),$(CLI_VENV)/bin/aws)  ## the AWS CLI the deploy targets use

demo: $(VENV)/.installed  ## rotate demo users' keys on a local moto server (VERBOSE=1: with log lines)
	$(BIN)/python tools/demo.py

test: $(VENV)/.installed  ## run the test suite
	$(BIN)/python -m pytest -n auto --durations=5

bench: $(VENV)/.installed  ## rotate SIZES secrets, each call behind LATENCY_MS; print figures
	$(BIN)/python tools/bench.py $(SIZES) --latency-ms $(LATENCY_MS) --propagation-s $(PROPAGATION_S)

lint: $(VENV)/.installed  ## static checks: code, CloudFormation template, the role's policy
	$(BIN)/ruff check .
	$(BIN)/cfn-lint template.yaml
	$(BIN)/python tools/lint_policy.py LambdaExecutionRole.json

package: dist/lambda.zip  ## the zip Lambda runs: lambda_function.py alone (boto3 is in the runtime)

dist/lambda.zip: lambda_function.py
	mkdir -p dist
	rm -f $@
	$(PYTHON) -m zipfile -c $@ lambda_function.py

need-function:
	@test -n "$(FUNCTION)" || { echo "give FUNCTION=<the Lambda function's name>: it is never guessed" >&2; exit 2; }

policy: need-function cli  ## dist/policy.json: the role's policy for ACCOUNT_ID and REGION (asked of the CLI if not given)
	@mkdir -p dist
	@account="$(ACCOUNT_ID)"; region="$(REGION)"; \
	test -n "$$account" || account=$$($(AWS) sts get-caller-identity --query Account --output text) || exit 1; \
	test -n "$$region" || region=$$($(AWS) configure get region); \
	test -n "$$region" || { echo "give REGION=... (or configure the CLI's region)" >&2; exit 2; }; \
	$(PYTHON) tools/deploy_config.py policy "$$account" "$$region" "$(FUNCTION)" "$(PREFIX)" "$(KMS_KEY_ID)" \
	  "$(USER_PATH)" "$(EVENT_BUS)" "$(ACCOUNT_REPORT)" "$(LOOKUP_HOLDOUTS)" \
	  > dist/policy.json.tmp && mv dist/policy.json.tmp dist/policy.json && echo "dist/policy.json ($$account, $$region)"

create: need-function package cli  ## first deployment: function, settings, concurrency 1, async retries
	@test -n "$(ROLE)" || { echo "make create needs ROLE=arn:aws:iam::ACCOUNT_ID:role/NAME" >&2; exit 2; }
	@test -n "$(SEC)" || { echo "make create needs SEC='iam-keys/a;iam-keys/b' (or SEC='iam-keys/*')" >&2; exit 2; }
	environment=$$($(PYTHON) tools/deploy_config.py create $(GIVEN_SETTINGS)) || exit 1; \
	$(AWS) lambda create-function --function-name $(FUNCTION) --runtime python3.13 \
	  --handler lambda_function.lambda_handler --role $(ROLE) --timeout $(TIMEOUT) --memory-size $(MEMORY) \
	  --zip-file fileb://dist/lambda.zip \
	  --environment "$$environment" --query FunctionArn --output text
	$(AWS) lambda put-function-concurrency --function-name $(FUNCTION) --reserved-concurrent-executions 1
	$(AWS) lambda put-function-event-invoke-config --function-name $(FUNCTION) \
	  --maximum-retry-attempts $(RETRIES) --maximum-event-age-in-seconds 21600 --query FunctionArn --output text

configure: need-function cli  ## change settings by name (SEC=... GRACE_HOURS=...), keeping the others
	@test -n "$(GIVEN_SETTINGS)" || { echo "name a setting: make configure FUNCTION=f GRACE_HOURS=24" >&2; exit 2; }
	@current=$$($(AWS) lambda get-function-configuration --function-name $(FUNCTION) \
	  --query Environment.Variables --output json) || exit 1; \
	merged=$$($(PYTHON) tools/deploy_config.py environment "$$current" $(GIVEN_SETTINGS)) || exit 1; \
	$(AWS) lambda update-function-configuration --function-name $(FUNCTION) --environment "$$merged" \
	  --query Environment.Variables --output json

deploy: need-function package cli  ## upload new code to an existing function
	$(AWS) lambda update-function-code --function-name $(FUNCTION) --zip-file fileb://dist/lambda.zip \
	  --query '[FunctionName, CodeSha256]' --output text

schedule: need-function cli  ## the EventBridge rule (daily by default) and its permission to invoke
	set -e; \
	function_arn=$$($(AWS) lambda get-function --function-name $(FUNCTION) --query Configuration.FunctionArn --output text); \
	rule_arn=$$($(AWS) events put-rule --name $(FUNCTION)-schedule --schedule-expression '$(SCHEDULE)' \
	  --query RuleArn --output text); \
	$(AWS) lambda remove-permission --function-name $(FUNCTION) --statement-id events-schedule >/dev/null 2>&1 || true; \
	$(AWS) lambda add-permission --function-name $(FUNCTION) --statement-id events-schedule \
	  --action lambda:InvokeFunction --principal events.amazonaws.com --source-arn "$$rule_arn" >/dev/null; \
	$(AWS) events put-targets --rule $(FUNCTION)-schedule --targets "Id=rotate,Arn=$$function_arn" >/dev/null; \
	echo "$$rule_arn -> $$function_arn"

invoke: need-function cli  ## run it now with EVENT (a JSON file; default: events/dry-run.json, a dry run)
	@mkdir -p dist
	@error=$$($(AWS) lambda invoke --function-name $(FUNCTION) --payload fileb://$(EVENT) dist/invoke-result.json \
	  --query FunctionError --output text) || exit 1; \
	cat dist/invoke-result.json; echo; \
	if [ -n "$$error" ] && [ "$$error" != "None" ]; then echo "the function failed ($$error): see above" >&2; exit 1; fi

report: need-function cli  ## the account's keys past MAX_KEY_AGE_DAYS, managed or not, and what rotates when
	@$(MAKE) -s invoke FUNCTION=$(FUNCTION) EVENT=events/report.json AWS=$(AWS) > dist/report.txt || \
	  { cat dist/report.txt; exit 1; }
	@$(PYTHON) tools/deploy_config.py report dist/invoke-result.json

# Route 2a's alarms: the template's four, told to TOPIC (an SNS topic ARN) when given.
ALARM = $(AWS) cloudwatch put-metric-alarm --dimensions Name=FunctionName,Value=$(FUNCTION) \
  $(if $(TOPIC),--alarm-actions $(TOPIC) --ok-actions $(TOPIC))

alarms: need-function cli  ## route 2a: the template's alarms (errors, no good run for 36 h, key in use, overdue)
	$(ALARM) --alarm-name $(FUNCTION)-errors --alarm-description "$(FUNCTION) failed to rotate at least one secret" \
	  --namespace AWS/Lambda --metric-name Errors --statistic Sum --period 3600 --evaluation-periods 1 \
	  --threshold 0 --comparison-operator GreaterThanThreshold --treat-missing-data notBreaching
	$(ALARM) --alarm-name $(FUNCTION)-no-success --alarm-description "$(FUNCTION): no run without failures for 36 hours" \
	  --namespace IAMKeyRotation --metric-name Succeeded --statistic Sum --period 43200 --evaluation-periods 3 \
	  --datapoints-to-alarm 3 --threshold 1 --comparison-operator LessThanThreshold --treat-missing-data breaching
	$(ALARM) --alarm-name $(FUNCTION)-still-in-use --alarm-description "$(FUNCTION) deactivated a key still in use" \
	  --namespace IAMKeyRotation --metric-name ForcedWhileInUse --statistic Sum --period 86400 --evaluation-periods 1 \
	  --threshold 0 --comparison-operator GreaterThanThreshold --treat-missing-data notBreaching
	$(ALARM) --alarm-name $(FUNCTION)-overdue --alarm-description "$(FUNCTION) manages a key past MAX_KEY_AGE_DAYS" \
	  --namespace IAMKeyRotation --metric-name OverdueKeys --statistic Maximum --period 86400 --evaluation-periods 1 \
	  --threshold 0 --comparison-operator GreaterThanThreshold --treat-missing-data notBreaching
	@echo "4 alarms for $(FUNCTION)$(if $(TOPIC), telling $(TOPIC))"

local-aws:  $(VENV)/.installed  ## a local moto server standing in for AWS: prints the variables to export
	$(BIN)/python tools/local_aws.py $(or $(PORT),5000)

# The schedule's rule: route 2a names it FUNCTION-schedule; a stack (STACK=...) knows its generated name.
RULE = $(if $(STACK),$$($(AWS) cloudformation list-stack-resources --stack-name $(STACK) --query \
  "StackResourceSummaries[?LogicalResourceId=='ScheduleRule'].PhysicalResourceId" --output text),$(FUNCTION)-schedule)

pause: need-function cli  ## stop the daily runs (route 2a; STACK=... for route 2b); nothing else changes
	@rule="$(RULE)"; $(AWS) events disable-rule --name "$$rule" && echo "paused $$rule"

resume: need-function cli  ## start the daily runs again (route 2a; STACK=... for route 2b)
	@rule="$(RULE)"; $(AWS) events enable-rule --name "$$rule" && echo "resumed $$rule"

logs: need-function cli  ## the function's log lines of the last SINCE minutes (default 60)
	$(AWS) logs filter-log-events --log-group-name /aws/lambda/$(FUNCTION) \
	  --start-time $$(( ($$(date +%s) - $(SINCE) * 60) * 1000 )) --query 'events[].message' --output text

destroy: need-function cli  ## remove the schedule and the function (the role and the secrets stay)
	-$(AWS) events remove-targets --rule $(FUNCTION)-schedule --ids rotate >/dev/null 2>&1
	-$(AWS) events delete-rule --name $(FUNCTION)-schedule 2>/dev/null
	$(AWS) lambda delete-function --function-name $(FUNCTION)
	@echo "removed $(FUNCTION) and its schedule; its log group /aws/lambda/$(FUNCTION) is kept"

clean:  ## remove the virtualenvs and build output
	rm -rf $(VENV) $(CLI_VENV) dist .pytest_cache .ruff_cache
