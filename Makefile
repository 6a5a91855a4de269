# microseg — run `make` to list targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
DEMO_USERS ?= 1500
DEMO_DAYS ?= 42
DEMO_START ?= 2026-09-03
# the morning after the last demo day: features, scores and segments describe the days before
DEMO_AS_OF ?= 2026-10-15
DEMO_LAST_DAY ?= 2026-10-14
DEMO_RETENTION_DAYS ?= 29
MLFLOW_PORT ?= 5000
CHROMIUM := /usr/bin/chromium
# The Spark target (MICROSEG_ENGINE=spark) runs PySpark on Debian's Java 17
JAVA := /usr/bin/java
# Airflow's metadata database (make airflow, the browser test): Debian's PostgreSQL server
PG_INITDB := $(or $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin/initdb))),/usr/lib/postgresql/15/bin/initdb)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

export MICROSEG_HOME ?= $(CURDIR)/data
# Nothing may phone home: the machines running this have no network.
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export MLFLOW_DISABLE_TELEMETRY := true
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: help install demo test lint format bench bench-100m airflow docs mlflow-ui clean

help: ## List the targets with what each does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet 'uv>=0.5,<1'

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

# The browser test drives Debian's Chromium (Playwright's own download needs the internet).
$(CHROMIUM):
	@echo "installing Debian's chromium for the browser test"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver

$(JAVA):
	@echo "installing Debian's Java 17 for the Spark target"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless

$(PG_INITDB):
	@echo "installing Debian's postgresql for Airflow's metadata database"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql

install: $(VENV)/.synced ## Create .venv from the committed uv.lock (bootstraps uv if missing)

demo: install $(JAVA) ## Sample events, then the weekly training and the nightly run: segments, scores, exports
	@echo "sample events with a true effect planted for the experiment cart_reminder to find: half of its reminder arm's people buy within the week after their abandoned cart (the answer key: landing/ground_truth/experiment_effects.parquet); its control arm and the other experiment are A/A. And churn for churn_risk to see coming: each day, half a percent of the people still visiting stop for good (landing/ground_truth/people.parquet: lapse_date)"
	$(BIN)/microseg generate --out $(MICROSEG_HOME)/landing --users $(DEMO_USERS) --days $(DEMO_DAYS) --start $(DEMO_START) --seed 7 --plant-lift cart_reminder:reminder=0.5 --plant-churn 0.005
	@echo "loading the deliveries before $(DEMO_LAST_DAY); that day's arrives with the night of $(DEMO_AS_OF)"
	$(BIN)/microseg ingest $$(ls $(MICROSEG_HOME)/landing/events_*.jsonl.gz | grep -v $(DEMO_LAST_DAY))
	$(BIN)/microseg validate --as-of $(DEMO_AS_OF)
	$(BIN)/microseg transform
	$(BIN)/microseg train --model purchase_propensity --model churn_risk --model content_preference
	$(BIN)/microseg promote --model purchase_propensity --model churn_risk --model content_preference
	@echo "a model on a table of your own (docs/examples/session_purchase.yaml): will a session end in a purchase, judging by how it browsed?"
	$(BIN)/microseg train --spec docs/examples/session_purchase.yaml
	@echo "recommenders (ml/specs/recommend_*.yaml): ALS, BPR, popularity and co-occurrence on the last 3 days; the best learned one registered, then gated"
	$(BIN)/microseg recommend train
	$(BIN)/microseg recommend promote
	@echo "activating the nights of 2026-10-06 ... 2026-10-14, with segments and the experiment's analysis on the last three (what the DAGs did while the data arrived; log: $(MICROSEG_HOME)/demo_activation.log)"
	@umask 077; for day in 06 07 08 09 10 11 12 13 14; do \
		case $$day in 12|13|14) $(BIN)/microseg segments --as-of 2026-10-$$day;; esac; \
		$(BIN)/microseg activate --as-of 2026-10-$$day; done > $(MICROSEG_HOME)/demo_activation.log
	@for day in 12 13 14; do $(BIN)/microseg experiment analyze --as-of 2026-10-$$day; done >> $(MICROSEG_HOME)/demo_activation.log
	@echo "the nightly run keeps $(DEMO_RETENTION_DAYS) days of raw events (MICROSEG_RAW_RETENTION_DAYS, at least the 28 days a trigger's baseline reads; its expire step deletes the older ones: the first 13 of the 42 days, their facts kept in the marts), takes in events up to 4 days late (MICROSEG_LATE_ARRIVAL_HOURS), and keeps DuckDB, dbt included, within 2GB of memory (MICROSEG_DUCKDB_MEMORY_LIMIT: past it, work spills to disk)"
	MICROSEG_RAW_RETENTION_DAYS=$(DEMO_RETENTION_DAYS) MICROSEG_LATE_ARRIVAL_HOURS=96 MICROSEG_DUCKDB_MEMORY_LIMIT=2GB $(BIN)/microseg run --as-of $(DEMO_AS_OF)
	$(BIN)/microseg segments --as-of $(DEMO_AS_OF) --file docs/examples/trial_segments.yml
	$(BIN)/microseg export --segment product_hesitators --as-of $(DEMO_AS_OF) --min-score 0.5 --out $(MICROSEG_HOME)/exports/likely_buyers_hesitating.csv
	@echo "why each of them scored (score_explanation, the first two people):"; head -3 $(MICROSEG_HOME)/exports/likely_buyers_hesitating.csv | cut -c1-400
	$(BIN)/microseg activation report --as-of $(DEMO_AS_OF)
	$(BIN)/microseg experiment check
	$(BIN)/microseg experiment analyze --as-of $(DEMO_AS_OF)
	$(BIN)/microseg experiment apply cart_reminder
	$(BIN)/microseg experiment power --baseline 0.05 --mde 0.10
	@echo "which article or video to show whom (marts.user_recommendations, written by the night's recommend step): one person's top 5, each with the item of their history it resembles"
	@$(BIN)/python -c "import duckdb; duckdb.connect('$(MICROSEG_HOME)/analytics.duckdb', read_only=True).sql(\"select person_id, rank, item_id, round(score, 3) as score, reason_item_id as because_of, source from marts.user_recommendations where model_name = 'recommend_content' and as_of_date = '$(DEMO_AS_OF)' and person_id = (select min(person_id) from marts.user_recommendations where source = 'model') and rank <= 5 order by rank\").show()"
	$(BIN)/microseg recommend evaluate --as-of $(DEMO_AS_OF)
	$(BIN)/microseg export --segment frequent_visitors --as-of $(DEMO_AS_OF) --with-recommendations 3 --out $(MICROSEG_HOME)/exports/frequent_visitors_next_reads.csv
	@echo "each frequent visitor with the three articles or videos to show them next (recommended_items, the first three people):"
	@$(BIN)/python -c "import csv; rows = list(csv.DictReader(open('$(MICROSEG_HOME)/exports/frequent_visitors_next_reads.csv', encoding='utf-8'))); [print(' ', r['person_id'], r['recommended_items']) for r in rows[:3]]"
	$(BIN)/microseg erase --user-id user_0000042 --reason "demo: a deletion request"
	@echo "pseudonymization at the door: one day loaded aside with MICROSEG_PSEUDONYMIZE (docs/privacy.md)"
	MICROSEG_HOME=$(MICROSEG_HOME)/pseudonymized MICROSEG_PSEUDONYMIZE=properties.email,user_id MICROSEG_PRIVACY_KEY=demo-only-key $(BIN)/microseg ingest $(MICROSEG_HOME)/landing/events_$(DEMO_LAST_DAY).jsonl.gz
	@$(BIN)/python -c "import duckdb; duckdb.connect('$(MICROSEG_HOME)/pseudonymized/warehouse.duckdb', read_only=True).sql(\"select user_id, properties ->> 'email' as email, properties ->> 'ip' as ip, page_url from raw.events where user_id is not null order by (properties ->> 'email') is null, event_id limit 4\").show(max_width=250)"
	MICROSEG_RAW_RETENTION_DAYS=$(DEMO_RETENTION_DAYS) $(BIN)/microseg privacy report --as-of $(DEMO_AS_OF)
	@echo "a Snowplow export and two days of a GA4 BigQuery export as they come (each recognized by its shape; docs/events.md) into a warehouse of their own, then their marts"
	MICROSEG_HOME=$(MICROSEG_HOME)/sources $(BIN)/microseg ingest docs/examples/snowplow_enriched_2026-10-01.tsv docs/examples/ga4/events_20261001.json
	MICROSEG_HOME=$(MICROSEG_HOME)/sources $(BIN)/microseg transform
	@echo "the same dbt project on Spark (MICROSEG_ENGINE=spark: dbt-spark, PySpark in local mode), from the same raw events: the same counts; its tables are served to DuckDB, where the segments run on them"
	MICROSEG_HOME=$(MICROSEG_HOME)/sources MICROSEG_ENGINE=spark $(BIN)/microseg transform
	@echo "GA4's second day, built incrementally on Spark: its build writes only the events the new day brought or re-attributed (batch 2)"
	MICROSEG_HOME=$(MICROSEG_HOME)/sources $(BIN)/microseg ingest docs/examples/ga4/events_20261002.json
	MICROSEG_HOME=$(MICROSEG_HOME)/sources MICROSEG_ENGINE=spark $(BIN)/microseg transform
	@$(BIN)/python -c "import duckdb; duckdb.connect('$(MICROSEG_HOME)/sources/warehouse.duckdb', read_only=True).sql('select batch, count(*) as events_written from intermediate.int_events_stitched group by 1 order by 1').show()"
	MICROSEG_HOME=$(MICROSEG_HOME)/sources MICROSEG_ENGINE=spark $(BIN)/microseg segments
	@$(BIN)/python -c "import duckdb; duckdb.connect('$(MICROSEG_HOME)/sources/warehouse.duckdb', read_only=True).sql(\"select source, count(*) as sessions, sum(page_views) as page_views, sum(engaged_s) as engaged_s, sum(cart_adds) as cart_adds, sum(revenue) as revenue from marts.fct_sessions join (select session_id, min(file_format) as source from intermediate.int_events_paged join raw.load_manifest on file_name = source_file group by 1) using (session_id) group by 1 order by 1\").show()"
	$(BIN)/microseg notebooks
	@echo "Segment memberships: marts.segment_memberships in $(MICROSEG_HOME)/analytics.duckdb"
	@echo "Audience CSVs: $(MICROSEG_HOME)/exports/$(DEMO_AS_OF)/ (with --min-score, each row says which three features moved the person's score: score_explanation)"
	@echo "Trigger messages: $(MICROSEG_HOME)/activation/<destination>/ (triggers.yml, docs/triggers.md)"
	@echo "Experiment lift over time: $(MICROSEG_HOME)/experiments/cart_reminder.png"
	@echo "Analysts' notebooks with their figures (funnel, cohorts, micro-behaviors, models, clusters, activation, segments): $(MICROSEG_HOME)/notebooks/*.html"
	@echo "MLflow UI: make mlflow-ui (login; the password is printed on its first start), then open http://127.0.0.1:$(MLFLOW_PORT)"

test: install $(CHROMIUM) $(PG_INITDB) $(JAVA) ## Lint, then run the whole test suite (what CI runs)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

lint: install ## Ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## Throughput and peak memory at scale (prints figures; not part of test)
	$(BIN)/python -m microseg.bench $(BENCH_ARGS)

# ~100M events out of core: the stages that must not hold the data in memory (the pandas peer,
# 11.8 GiB at 10M, would need about ten times that; Spark's local build took 236 s at 1M); DuckDB
# gets 8 GiB
BENCH_100M_STAGES = generate,ingest,transform,window floor,night,day alone,scan floor
bench-100m: install ## About 100M events (120,000 people x 30 days) generated on the fly, memory limit 8 GiB
	MICROSEG_DUCKDB_MEMORY_LIMIT=8GB $(BIN)/python -m microseg.bench --users 120000 --days 30 --stages "$(BENCH_100M_STAGES)"

airflow: install $(PG_INITDB) ## Start Airflow 3 (UI with login on 127.0.0.1:8080, scheduler, dag-processor, PostgreSQL)
	$(BIN)/python -m microseg.serve.airflow_ui

docs: install ## Build dbt docs, GX Data Docs and the executed notebooks for the current warehouse; print where they are
	$(BIN)/microseg docs
	$(BIN)/microseg notebooks

mlflow-ui: install ## MLflow UI with login (runs, registry, aliases) on 127.0.0.1, port MLFLOW_PORT (5000)
	MICROSEG_MLFLOW_PORT=$(MLFLOW_PORT) $(BIN)/python -m microseg.serve.mlflow_ui

clean: ## Remove generated data (keeps .venv)
	@# under root, Airflow's PostgreSQL cluster lives in the postgres user's home (serve/postgres.py)
	if [ -L $(MICROSEG_HOME)/airflow/postgres ]; then rm -rf "$$(readlink $(MICROSEG_HOME)/airflow/postgres)"; fi
	rm -rf $(MICROSEG_HOME) test-artifacts .pytest_cache
