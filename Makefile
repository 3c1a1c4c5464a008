# make test: the suite; make demo: the main job (CPU benchmark summary, then the adaptation demos:
# MinEnt toy, two moons and digits (source-only/ADR/DTA/I2I), real MNIST -> UCI digits (source-only/DTA, 2 seeds),
# synthetic street scenes (source-only/MinEnt/AdvEnt/CLAN/I2I)).
# Both set up what they need on a fresh machine: a venv in .venv (seeing the system's site-packages,
# so an installed CUDA torch is used as is), torch 2.13.0 if no torch is importable, the test and demo
# packages, and the extension, built once (rebuilt only when csrc/ or setup.py change).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TRITON_SPEC ?= triton==3.9.0
MAX_JOBS ?= 2
PYTEST := $(PY) -m pytest -p no:cacheprovider
EXT_SRCS := setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)

.PHONY: all test demo bench build clean gpu-test gpu-bench gpu-check sanitize

all: test

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q pytest hypothesis pytest-benchmark tqdm matplotlib scikit-learn mlxtend scikit-image opencv-python-headless ninja setuptools wheel
	$(PY) -c "import triton" 2>/dev/null || $(PY) -m pip install -q "$(TRITON_SPEC)"
	touch $@

uda_ops/.built: $(VENV)/.ready $(EXT_SRCS)
	MAX_JOBS=$(MAX_JOBS) $(PY) -m pip install -q -e . --no-build-isolation --no-deps
	touch $@

build: uda_ops/.built

test: build
	$(PYTEST) tests -q
	UDA_BENCH_SHAPE=2,19,16,24 $(PYTEST) benchmarks -q --benchmark-disable -k "not compile"

# AddressSanitizer + UBSan (issue 13): the CPU extension built apart in build/sanitize (csrc/build_sanitized.py;
# the in-place uda_ops/_C*.so is untouched), loaded through UDA_OPS_EXTENSION, with libasan preloaded (and
# libstdc++, for ASan's __cxa_throw interceptor); leak checks off (CPython leaks by design), any report fatal
# (--capture=sys: a report on fd 2 reaches the console).
SAN_DIR ?= build/sanitize
SAN_TESTS := tests/test_sanitize.py tests/test_ops.py tests/test_mask.py tests/test_properties.py tests/test_api.py \
	tests/test_autograd_and_ops.py tests/test_dropout.py
sanitize: $(VENV)/.ready
	@mkdir -p $(SAN_DIR)
	MAX_JOBS=$(MAX_JOBS) $(PY) csrc/build_sanitized.py $(SAN_DIR) > $(SAN_DIR).log || { tail -n 40 $(SAN_DIR).log; exit 1; }
	LD_PRELOAD="$$($${CXX:-c++} -print-file-name=libasan.so) $$($${CXX:-c++} -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	UDA_OPS_EXTENSION="$$(tail -n 1 $(SAN_DIR).log)" $(PYTEST) $(SAN_TESTS) -q --capture=sys

bench: build
	$(PY) benchmarks/summary.py --save

# The console shows one line per step, the runs' progress bars (stderr) and, at the end, the compact summary
# (models.report: CPU speed table, one results table per task); each step's stdout (pytest-benchmark tables,
# config dumps, per-run lines) goes to demo_out/logs/<step>.log. The page: demo_out/report.html.
DEMO_LOG := demo_out/logs
DEMO_STEP = step() { n=$$1; shift; echo "== $$n  (log: $(DEMO_LOG)/$$n.log)"; "$$@" > $(DEMO_LOG)/$$n.log || \
	{ tail -n 30 $(DEMO_LOG)/$$n.log; echo "$$n failed; full log: $(DEMO_LOG)/$$n.log"; exit 1; }; }; step

demo: build
	@mkdir -p $(DEMO_LOG)
	@$(DEMO_STEP) benchmarks $(PY) benchmarks/summary.py --json demo_out/benchmark_summary.json
	@$(DEMO_STEP) minent_toy $(PY) -m models.minent_toy --seeds 5 && tail -n 1 $(DEMO_LOG)/minent_toy.log
	@$(DEMO_STEP) moons $(PY) -m models.compare --task moons --methods source_only,adr,dta --seeds 5 --out demo_out/moons --json demo_out/moons.json
	@$(DEMO_STEP) digits $(PY) -m models.compare --task digits --methods source_only,adr,dta,i2i --seeds 3 --out demo_out/digits --json demo_out/digits.json
	@$(DEMO_STEP) real_data $(PY) -m models.compare --task 'mnist->digits' --methods source_only,dta --seeds 2 --out demo_out/real --json demo_out/real.json
	@$(DEMO_STEP) synthetic $(PY) -m models.compare --task synthetic --methods source_only,minent,advent,clan,i2i --seeds 3 --out demo_out/synthetic --json demo_out/synthetic.json
	@echo
	@$(PY) -m models.report demo_out | tee $(DEMO_LOG)/summary.txt

# On a machine with a CUDA GPU: the CUDA/Triton suite (also under compute-sanitizer) and the GPU benchmarks.
gpu-test: build
	$(PYTEST) tests/test_cuda.py tests/test_triton.py tests/test_cuda_compile.py -q
	compute-sanitizer --tool memcheck --error-exitcode 1 $(PY) -m pytest -p no:cacheprovider tests/test_cuda.py -q -k "not compile and not opcheck and not gradcheck"
	compute-sanitizer --tool racecheck --error-exitcode 1 $(PY) -m pytest -p no:cacheprovider tests/test_cuda.py -q -k mask

gpu-bench: build
	$(PY) benchmarks/gpu_summary.py --save
	$(PY) benchmarks/train_step.py

# On a lent GPU, one command (issue 10): build the CUDA extension, GPU tests, compute-sanitizer memcheck/racecheck/
# initcheck, GPU benchmarks, kernel report, all into benchmarks/results/<device>-<date>/ (and $OUT when set); see
# benchmarks/gpu_check.py. Runs on the machine's python3 (which holds its CUDA torch), not the venv. Under a
# 10-minute per-command limit run it in pieces: GPU_CHECK_STAGES=info,build, then tests, sanitize, bench, report.
GPU_PY ?= python3
GPU_CHECK_STAGES ?= info,build,tests,sanitize,bench,report
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py --stages $(GPU_CHECK_STAGES)

clean:
	rm -rf build uda_ops/_C*.so uda_ops/.built demo_out .benchmarks
