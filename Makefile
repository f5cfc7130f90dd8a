# trellis: the entry points a person types. Meson + Ninja do the building.
#   make          build build/trellis
#   make check    install what is missing, build, run every test
#   make demo     install what is missing, build, run the bookinfo mesh (trellis up; in network
#                 namespaces as root, else trellis up --loopback)
#   make bench    the side-by-side benchmark (bench/README.md)
#   make bench-micro  route matching and Istio compile micro-benchmarks (docs/performance.md)

PYTHON      ?= /usr/bin/python3
BUILD       ?= build
ASAN_BUILD  ?= build-asan
FUZZ_BUILD  ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS        ?= 2

.PHONY: all build bootstrap check check-unit check-asan check-integration fuzz demo bench bench-micro format format-check clean

all: build

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized -Dwerror=true

build: $(BUILD)/build.ninja
	ninja -C $(BUILD) -j $(JOBS)

bootstrap:
	./scripts/bootstrap.sh

# Bootstrap first, then the rest, also under make -j (the packages must be
# there before meson runs).
check: bootstrap
	$(MAKE) build check-unit check-asan check-integration

check-unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

$(ASAN_BUILD)/build.ninja:
	CC=clang meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined \
	  -Db_lundef=false -Dwerror=true

check-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD) -j $(JOBS)
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
	  meson test -C $(ASAN_BUILD) --suite unit --print-errorlogs

check-integration: build
	TRELLIS_BIN=$(CURDIR)/$(BUILD)/trellis $(PYTHON) -m pytest -q tests/integration

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) --buildtype=debugoptimized -Dfuzz=true -Dtests=disabled \
	  -Db_sanitize=address,undefined -Db_lundef=false

# Each fuzz target runs FUZZ_SECONDS on a scratch copy of its committed corpus.
fuzz: $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) -j $(JOBS) fuzz/fuzz_h1_request fuzz/fuzz_h1_response fuzz/fuzz_config fuzz/fuzz_h2_frames \
	  fuzz/fuzz_formatters fuzz/fuzz_resource fuzz/fuzz_istio fuzz/fuzz_path fuzz/fuzz_jwt fuzz/fuzz_authz fuzz/fuzz_csr fuzz/fuzz_tls_sni fuzz/fuzz_control_msg fuzz/fuzz_client_hello
	set -e; for t in fuzz_h1_request fuzz_h1_response fuzz_config fuzz_h2_frames fuzz_formatters fuzz_resource fuzz_istio fuzz_path fuzz_jwt fuzz_authz fuzz_csr fuzz_tls_sni fuzz_control_msg fuzz_client_hello; do \
	  work=$$(mktemp -d); cp -r fuzz/corpus/$$t/. $$work/; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
	  rc=0; $(FUZZ_BUILD)/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -dict=fuzz/$$t.dict \
	    -print_final_stats=1 $$work > $$work.log 2>&1 || rc=$$?; \
	  tail -n 12 $$work.log; \
	  if [ $$rc -ne 0 ]; then grep -A30 -m1 'ERROR\|SUMMARY' $$work.log || true; \
	    echo "fuzz: $$t FAILED (exit $$rc)"; rm -rf $$work $$work.log; exit 1; fi; \
	  rm -rf $$work $$work.log; \
	done

# The README's first command on a fresh machine: install the dependencies
# first. A sub-make, so that the build starts only after bootstrap even
# under make -j.
demo: bootstrap
	$(MAKE) build
	./scripts/demo.sh

bench: build
	./bench/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

# In-process micro-benchmarks of issue 8 (bench/micro/, docs/performance.md
# "Istio: route matching and compiling"): route matching over 10,000 routes,
# and compiling a 1,000-service Istio mesh for one workload.
bench-micro: $(BUILD)/build.ninja
	ninja -C $(BUILD) -j $(JOBS) bench/bench_route_match bench/bench_istio_compile
	$(BUILD)/bench/bench_route_match
	$(BUILD)/bench/bench_istio_compile
