# wsss_edu — every command creates the environment (.venv, with uv) when it is missing.
#   make run    execute every notebook (papermill, default parameters) → runs/
#   make test   make lint, then unit tests + every notebook under nbval, then JupyterLab in headless
#               Chromium (CI)
#   make lint   ruff check + ruff format --check, every notebook in step with its source, outputs stripped
#   make browser  only the JupyterLab test (tests_browser; after make test has filled runs/test)
#   make bench  benchmarks: each figure against a reference measured in the same run, and the ratio
#   make gpu-check  every full-profile training step and per-image pass timed on the GPU (<= 8 min)
#   make lab    JupyterLab with the package's environment as the kernel
#   make lock   re-compile requirements.lock from requirements.in (one file for every platform/Python)
#   make lock-check  resolve requirements.lock for each platform x Python (no install; CI runs it)
#   make torch-choice  say which torch build `make env` installs here (TORCH=auto|cpu|cuda)
#   make sync   jupytext --sync: notebooks/NN_*.ipynb <-> notebooks/src/NN_*.py, after editing either
#   make strip  strip notebook outputs (nbstripout; execution counts and cell ids kept)
#   make students  regenerate the student versions (students/) from the notebooks

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
UV     := $(PY) -m uv
UV_VERSION := 0.13.9
OUT    ?= runs
RUFF   := $(VENV)/bin/ruff
JUPYTEXT := $(VENV)/bin/jupytext
# Cell ids kept (nbval, the browser test and git diffs rely on them; nbstripout would renumber them),
# execution counts kept (as the strip before nbstripout did).
NBSTRIPOUT := $(VENV)/bin/nbstripout --keep-count --keep-id
NOTEBOOKS  := $(wildcard notebooks/[0-9][0-9]*_*.ipynb)

# uv must trust the system CA bundle on machines with an intercepting proxy.
export UV_NATIVE_TLS := 1
export SSL_CERT_FILE ?= /etc/ssl/certs/ca-certificates.crt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# torch's OpenMP threads sleep, not spin, while waiting for a descheduled one: on a machine shared
# with other work, spinning made notebook 00's training 7x slower (wsss_edu/parallel.py).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: env run test lint unit notebooks browser bench gpu-check lab lock lock-check torch-choice sync strip students clean

# Which torch build `make env` installs (README "Install"):
#   TORCH=cpu   CPU-only torch/torchvision (+cpu) from PyTorch's CPU index (uv --torch-backend cpu),
#               every other pin from the registry, no nvidia-*/cuda-*/triton packages
#   TORCH=cuda  the registry's pair as locked (on Linux PyPI's torch is the CUDA build)
#   TORCH=auto  (default) cpu on Linux without an NVIDIA driver (no nvidia-smi) when the CPU index
#               answers within TORCH_PROBE_SECONDS, otherwise the registry's pair, saying why.
#               On macOS and Windows the registry's wheels are already CPU (or MPS) builds.
# The choice applies when .venv is made; to switch: rm -rf .venv && make env TORCH=cpu
TORCH ?= auto
# The index of uv's --torch-backend cpu (what TORCH=auto probes).
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_PROBE_SECONDS ?= 5
NVIDIA_SMI ?= nvidia-smi
# Lock entries only the CUDA build of torch needs, left out for TORCH=cpu (tests/test_lock.py checks
# that nothing else in the lock needs them).
CUDA_ONLY := ^(nvidia-|cuda-|triton==)

# Prints `cpu` or `registry` for $(TORCH), and on stderr one line saying why.
define TORCH_CHOICE
case "$(TORCH)" in \
  cpu) echo "torch: TORCH=cpu, the CPU-only build from $(TORCH_CPU_INDEX)" >&2; echo cpu ;; \
  cuda) echo "torch: TORCH=cuda, the registry's pair as locked" >&2; echo registry ;; \
  auto) if [ "$$(uname -s)" != Linux ]; then \
          echo "torch: the registry's pair (on $$(uname -s) it is a CPU/MPS build)" >&2; echo registry; \
        elif command -v $(NVIDIA_SMI) >/dev/null 2>&1; then \
          echo "torch: the registry's CUDA build (nvidia-smi found an NVIDIA driver)" >&2; echo registry; \
        elif $(PYTHON) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))" \
             "$(TORCH_CPU_INDEX)/torch/" "$(TORCH_PROBE_SECONDS)" >/dev/null 2>&1; then \
          echo "torch: the CPU-only build from $(TORCH_CPU_INDEX) (no NVIDIA GPU found)" >&2; echo cpu; \
        else \
          echo "torch: the registry's CUDA build, which runs on the CPU (no NVIDIA GPU, but $(TORCH_CPU_INDEX) is not reachable: probed with a $(TORCH_PROBE_SECONDS) s timeout; TORCH=cpu to insist)" >&2; echo registry; \
        fi ;; \
  *) echo "TORCH=$(TORCH) is not a choice: use TORCH=auto, TORCH=cpu or TORCH=cuda" >&2; exit 2 ;; \
esac
endef

env: $(STAMP)

torch-choice:
	@$(TORCH_CHOICE)

# A plain venv first (the system Python is never modified, even where it is "externally managed"),
# uv inside it, then the locked set through uv, compiled to bytecode: where PYTHONDONTWRITEBYTECODE
# is set (CI) no .pyc is ever written, and every kernel and worker process would compile torch's
# sources again (~6 s each; notebook 02 spawns six workers).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	@build=$$($(TORCH_CHOICE)) || exit $$?; \
	if [ "$$build" = cpu ]; then \
	  grep -vE '$(CUDA_ONLY)' requirements.lock > $(VENV)/requirements-cpu.txt && \
	  echo "$(UV) pip install --torch-backend cpu -r $(VENV)/requirements-cpu.txt" && \
	  $(UV) pip install --quiet --compile-bytecode --python $(PY) --torch-backend cpu -r $(VENV)/requirements-cpu.txt; \
	else \
	  echo "$(UV) pip install -r requirements.lock" && \
	  $(UV) pip install --quiet --compile-bytecode --python $(PY) -r requirements.lock; \
	fi
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

run: env
	$(PY) -m wsss_edu.runner --output $(OUT)

# Two pytest runs. First the unit tests, then every notebook executed by nbval (assert cells are the
# checks; outputs are not compared); the notebooks write to runs/test. Then tests_browser: JupyterLab
# on 127.0.0.1 driven by headless Chromium (Debian's chromium + chromium-driver) runs the interactive
# notebooks top to bottom, reading the networks the first run cached in runs/test, and moves their
# sliders. Without the browser it is skipped (the reason names the fix); WSSS_REQUIRE_BROWSER=1
# (set by .ci/run) makes that a failure.
test: env lint
	WSSS_OUTPUT_DIR=$(CURDIR)/runs/test $(PY) -m pytest tests notebooks --nbval-lax \
		--nbval-current-env --nbval-cell-timeout=1500 -p no:cacheprovider -q -rs --durations=15
	$(BROWSER_TEST)

# The same checks as .pre-commit-config.yaml, without changing a file. The pairing check is the test
# that compares each notebook with its source through jupytext (the fix: `make sync`).
lint: env
	$(RUFF) check .
	$(RUFF) format --check .
	$(PY) -m pytest tests/test_params_runner.py -k in_step_with_their_sources -q -p no:cacheprovider
	$(NBSTRIPOUT) --verify $(NOTEBOOKS)

BROWSER_TEST = WSSS_OUTPUT_DIR=$(CURDIR)/runs/test $(PY) -m pytest tests_browser -p no:cacheprovider \
		-q -s -rs --tb=short --durations=0

browser: env
	$(BROWSER_TEST)

unit: env
	$(PY) -m pytest tests -q

notebooks: env
	WSSS_OUTPUT_DIR=$(CURDIR)/runs/test $(PY) -m pytest notebooks --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=1500 -p no:cacheprovider -q

# Every figure next to a reference measured in the same run and their ratio (benchmarks/ratio.py):
# the table at the end, also in $(OUT)/bench/bench.json. One thread per process (the per-image
# passes' N processes x 1 thread <= cores; the networks and the CPU's peak on the same one thread).
# BENCH_NAIVE_GB (default 3): the largest estimated peak the naive all-pairs energy may take (its
# 161² case needs ~15 GB); BENCH_WALK_ROWS (default 256): rows of the dense walk's squaring timed
# (11750 = a whole squaring, ~2 min on one core); BENCH_URN_IMAGES (default 300). Budget: 10 min
# on 2 cores.
bench: env
	OMP_NUM_THREADS=1 WSSS_BENCH_JSON=$(CURDIR)/$(OUT)/bench/bench.json $(PY) -m pytest benchmarks \
		--benchmark-columns=min,mean,max,rounds -p no:cacheprovider -q -s

# On CUDA <= 8 minutes (README "The full-scale run"); without CUDA tiny sizes, in seconds.
gpu-check: env
	$(PY) -m wsss_edu.steps.gpu_check --output $(OUT)/gpu_check

lab: env
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (wsss_edu)" >/dev/null
	$(PY) -m jupyter lab --notebook-dir=notebooks

# uv rewrites the whole file: the first line, which says what the file is, is put back after it.
# --universal: one file with environment markers for every platform; --python-version: the lowest
# Python supported (requires-python in pyproject.toml).
LOCK_HEADER := \# Exact, tested set: compiled from requirements.in with `make lock` (uv pip compile --universal: one file, environment markers, every supported platform and Python). CI and `make` install this; `make lock-check` resolves it for each platform and Python.

lock: env
	$(UV) pip compile requirements.in -o requirements.lock --universal --python-version 3.11 --quiet --no-header
	@{ echo '$(LOCK_HEADER)'; cat requirements.lock; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

# The newer file of each pair wins (notebooks/jupytext.toml pairs them); the .ipynb keeps its cell ids
# and outputs. The sources are named too, so that a new notebooks/src/NN_*.py gets its notebook.
sync: env
	$(JUPYTEXT) --sync $(NOTEBOOKS) notebooks/src/*.py

# Resolution only (no install), through the registry: fails naming each platform x Python that
# does not resolve (tools/check_lock.py; ~2 min the first time, seconds with uv's cache).
lock-check: env
	$(PY) tools/check_lock.py

strip: env
	$(NBSTRIPOUT) $(NOTEBOOKS)

students: env
	$(PY) -m wsss_edu.nbtools students

clean:
	rm -rf runs .pytest_cache
