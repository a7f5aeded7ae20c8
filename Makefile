# Every target builds the virtualenv it needs, so a fresh clone works as is.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
AWS    ?= $(BIN)/aws

SIZES      ?= 50 200 400
LATENCY_MS ?= 30
PROPAGATION_S ?= 0

# Deployment (see README): make create FUNCTION=... ROLE=arn:... SEC='iam-keys/a;iam-keys/b'
FUNCTION ?= iam-key-rotation
ROLE     ?=
SEC      ?=
TIMEOUT  ?= 900
MEMORY   ?= 256
SCHEDULE ?= cron(0 6 * * ? *)
RETRIES  ?= 2

.PHONY: demo test lint bench package create deploy schedule clean

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed  ## rotate demo users' keys on a local moto server
	$(BIN)/python tools/demo.py

test: $(VENV)/.installed  ## run the test suite
	$(BIN)/python -m pytest

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

create: package $(VENV)/.installed  ## first deployment: the function, its settings, concurrency 1, async retries
	@test -n "$(ROLE)" || { echo "make create needs ROLE=arn:aws:iam::ACCOUNT_ID:role/NAME" >&2; exit 2; }
	@test -n "$(SEC)" || { echo "make create needs SEC='secret-a;secret-b' (the secrets to rotate)" >&2; exit 2; }
	$(AWS) lambda create-function --function-name $(FUNCTION) --runtime python3.12 \
	  --handler lambda_function.lambda_handler --role $(ROLE) --timeout $(TIMEOUT) --memory-size $(MEMORY) \
	  --zip-file fileb://dist/lambda.zip --environment '{"Variables": {"sec": "$(SEC)"}}' \
	  --query FunctionArn --output text
	$(AWS) lambda put-function-concurrency --function-name $(FUNCTION) --reserved-concurrent-executions 1
	$(AWS) lambda put-function-event-invoke-config --function-name $(FUNCTION) \
	  --maximum-retry-attempts $(RETRIES) --maximum-event-age-in-seconds 21600 --query FunctionArn --output text

deploy: package $(VENV)/.installed  ## upload new code to an existing function
	$(AWS) lambda update-function-code --function-name $(FUNCTION) --zip-file fileb://dist/lambda.zip \
	  --query '[FunctionName, CodeSha256]' --output text

schedule: $(VENV)/.installed  ## the EventBridge rule (daily by default) and its permission to invoke
	set -e; \
	function_arn=$$($(AWS) lambda get-function --function-name $(FUNCTION) --query Configuration.FunctionArn --output text); \
	rule_arn=$$($(AWS) events put-rule --name $(FUNCTION)-schedule --schedule-expression '$(SCHEDULE)' \
	  --query RuleArn --output text); \
	$(AWS) lambda remove-permission --function-name $(FUNCTION) --statement-id events-schedule >/dev/null 2>&1 || true; \
	$(AWS) lambda add-permission --function-name $(FUNCTION) --statement-id events-schedule \
	  --action lambda:InvokeFunction --principal events.amazonaws.com --source-arn "$$rule_arn" >/dev/null; \
	$(AWS) events put-targets --rule $(FUNCTION)-schedule --targets "Id=rotate,Arn=$$function_arn" >/dev/null; \
	echo "$$rule_arn -> $$function_arn"

clean:
	rm -rf $(VENV) dist .pytest_cache .ruff_cache
