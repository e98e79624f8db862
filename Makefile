# stackwatch build. `make` builds build/{libstackagent.so,collectord,stackctl};
# `make check` runs every test; `make demo` shows a leak report end to end.
#
#   make OPTIMIZATION=-O0          debug build
#   make SANITIZER=address         ASan build of collectord, stackctl and unit tests (build/asan)
#   make SANITIZER=undefined       UBSan build of everything, the agent too (build/ubsan)
#   make SANITIZER=thread          TSan build of the agent-core stress test and the ring test (build/tsan)

OPTIMIZATION ?= -O2
SANITIZER ?=
PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
PYTHON ?= /usr/bin/python3

WARN = -Wall -Wextra -Wstrict-prototypes -Wno-unused-parameter
STD = -std=gnu11
DEBUG = -g

ifeq ($(SANITIZER),)
BUILD ?= build
SAN_CFLAGS =
else ifeq ($(SANITIZER),address)
BUILD ?= build/asan
SAN_CFLAGS = -fsanitize=address -fno-omit-frame-pointer
else ifeq ($(SANITIZER),undefined)
BUILD ?= build/ubsan
SAN_CFLAGS = -fsanitize=undefined -fno-sanitize-recover=all
else ifeq ($(SANITIZER),thread)
BUILD ?= build/tsan
SAN_CFLAGS = -fsanitize=thread
else
$(error SANITIZER must be address, undefined or thread (got '$(SANITIZER)'))
endif

GEN = $(BUILD)/gen
PB_C = $(GEN)/proto/stackwatch.pb-c.c
PB_H = $(GEN)/proto/stackwatch.pb-c.h
PB_O = $(BUILD)/obj/pb/stackwatch.pb-c.o
PB_PIC_O = $(BUILD)/obj/pic/stackwatch.pb-c.o

# CPython 3.11's headers (internal ones included) for agent/pyframes.c's layouts.
PYTHON_INCLUDE ?= /usr/include/python3.11
CFLAGS_COMMON = $(STD) $(WARN) $(OPTIMIZATION) $(DEBUG) $(SAN_CFLAGS) -MMD -MP \
	-D_GNU_SOURCE -I. -Iproto -I$(GEN) -I$(PYTHON_INCLUDE)
# Frame pointers in the agent: the frame-pointer unwinder walks through it.
AGENT_CFLAGS = $(CFLAGS_COMMON) -fPIC -fvisibility=hidden -ftls-model=initial-exec \
	-fno-omit-frame-pointer \
	-fno-builtin-malloc -fno-builtin-free -fno-builtin-calloc -fno-builtin-realloc \
	-DUNW_LOCAL_ONLY
COLL_CFLAGS = $(CFLAGS_COMMON)

AGENT_LIBS = -lunwind -lprotobuf-c -lpthread -ldl -lm
COLL_LIBS = -lev -lprotobuf-c -ldw -lelf -lpthread -lstdc++ -lm
CLI_LIBS = -lprotobuf-c -lz -lelf

AGENT_SRC = $(wildcard agent/*.c)
# The agent without its interposers and entry points (hook.c; agent.c's exit and
# __libc_start_main; attach.c): linked into unit tests, TSan and the agent fuzzer.
AGENT_CORE_SRC = $(filter-out agent/hook.c agent/agent.c agent/attach.c,$(AGENT_SRC))

# One positive list per folder (README.md, "Layout"): a new file
# goes into the list of the program it belongs to.
# What both programs link: the request/reply call, the run directory, signal
# names, /proc maps, ptrace, which stack frames are CPython's.
COMMON_SRC = $(addprefix collector/common/,cli_call.c rundir.c signame.c procmaps.c tracee.c \
	cpython.c)
# The daemon; main.c apart so unit tests and fuzzers link the rest.
COLLECTORD_LIB_SRC = $(addprefix collector/collectord/, \
	srv.c age.c clock.c log.c scans.c arming.c saves.c symq.c \
	conn.c peer.c ingest.c ctl.c report.c \
	client.c ftab.c atab.c amap.c reo.c classify.c sym.c wrap.c trig.c store.c metrics.c \
	scan.c reach.c rootname.c pytype.c)
COLLECTORD_SRC = collector/collectord/main.c $(COLLECTORD_LIB_SRC) $(COMMON_SRC)
# The CLI; main.c (the subcommand table) apart for unit tests and the reply fuzzer.
STACKCTL_LIB_SRC = $(addprefix collector/stackctl/,render.c report.c pprof.c html.c py.c \
	diff.c json.c attach.c inject.c elfsym.c run.c)
STACKCTL_SRC = collector/stackctl/main.c $(STACKCTL_LIB_SRC) $(COMMON_SRC)
PROTO_SRC = proto/frame.c

AGENT_OBJ = $(patsubst %.c,$(BUILD)/obj/pic/%.o,$(AGENT_SRC) $(PROTO_SRC)) $(PB_PIC_O)
COLL_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(COLLECTORD_SRC) $(PROTO_SRC)) $(PB_O)
CLI_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(STACKCTL_SRC) $(PROTO_SRC)) $(PB_O)

TEST_PROGS_SRC = $(wildcard tests/progs/*.c)
TEST_PROGS = $(patsubst tests/progs/%.c,$(BUILD)/progs/%,$(filter-out tests/progs/lib%.c,$(TEST_PROGS_SRC))) \
	$(patsubst tests/progs/%.cpp,$(BUILD)/progs/%,$(wildcard tests/progs/*.cpp))
TEST_LIBS = $(patsubst tests/progs/%.c,$(BUILD)/progs/%.so,$(filter tests/progs/lib%.c,$(TEST_PROGS_SRC)))
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BINS = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

ifeq ($(SANITIZER),address)
TARGETS = $(BUILD)/collectord $(BUILD)/stackctl
else ifeq ($(SANITIZER),thread)
TARGETS = $(BUILD)/tests/tsan_agent_core $(BUILD)/tests/test_agent_ring
else
TARGETS = $(BUILD)/libstackagent.so $(BUILD)/collectord $(BUILD)/stackctl
endif

.PHONY: all deps check check-unit check-integration check-compat soak soak-deps check-sanitizers check-fuzz demo pythons check-pythons \
	progs unit clean install fuzz fuzz-long check-layout
all: $(TARGETS)

# ------------------------------------------------------------------ generated protocol
$(PB_C) $(PB_H): proto/stackwatch.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) $<

$(PB_O): $(PB_C) $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(COLL_CFLAGS) -Wno-unused-parameter -c $< -o $@

$(PB_PIC_O): $(PB_C) $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(AGENT_CFLAGS) -c $< -o $@

# pprof's profile.proto (package perftools.profiles, from Debian's
# golang-github-google-pprof-dev), compiled from the installed file: stackctl's
# --format pprof. The .c comes with the .h, in one protoc-c run.
PPROF_PROTO ?= /usr/share/gocode/src/github.com/google/pprof/proto/profile.proto
PPROF_C = $(GEN)/pprof/profile.pb-c.c
PPROF_H = $(GEN)/pprof/profile.pb-c.h
PPROF_O = $(BUILD)/obj/pb/profile.pb-c.o
CLI_OBJ += $(PPROF_O)

$(PPROF_PROTO):
	@echo "$@ is missing: run 'make deps' (golang-github-google-pprof-dev)" >&2; exit 1

$(PPROF_H): $(PPROF_PROTO)
	@mkdir -p $(dir $@)
	protoc-c --proto_path=$(dir $<) --c_out=$(dir $@) $<

$(PPROF_C): $(PPROF_H)

$(PPROF_O): $(PPROF_C) $(PPROF_H)
	@mkdir -p $(dir $@)
	$(CC) $(COLL_CFLAGS) -Wno-unused-parameter -c $< -o $@

$(BUILD)/obj/collector/stackctl/pprof.o: $(PPROF_H)

# The HTML report's stylesheet and script, edited as files, compiled in.
HTML_ASSETS_H = $(GEN)/html_assets.h
$(HTML_ASSETS_H) build/fuzz/gen/html_assets.h: collector/stackctl/html.css collector/stackctl/html.js scripts/embed.py
	@mkdir -p $(dir $@)
	$(PYTHON) scripts/embed.py $@ html_css collector/stackctl/html.css html_js collector/stackctl/html.js
$(BUILD)/obj/collector/stackctl/html.o: $(HTML_ASSETS_H)

# ------------------------------------------------------------------ objects
$(BUILD)/obj/pic/%.o: %.c $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(AGENT_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(COLL_CFLAGS) -c $< -o $@

# ------------------------------------------------------------------ programs
$(BUILD)/libstackagent.so: $(AGENT_OBJ)
	$(CC) -shared $(SAN_CFLAGS) -Wl,--no-undefined -Wl,-z,now -o $@ $^ $(AGENT_LIBS)

$(BUILD)/collectord: $(COLL_OBJ)
	$(CC) $(SAN_CFLAGS) -o $@ $^ $(COLL_LIBS)

$(BUILD)/stackctl: $(CLI_OBJ)
	$(CC) $(SAN_CFLAGS) -o $@ $^ $(CLI_LIBS)

# ------------------------------------------------------------------ tests
# Test programs: -O0 and no sibling calls so every planted frame stays.
PROG_FLAGS = -g -O0 -fno-omit-frame-pointer -fno-optimize-sibling-calls -fno-inline \
	-Wall -Wextra -Wno-unused-result -Wno-alloc-size-larger-than -D_GNU_SOURCE
PROG_CFLAGS = -std=gnu11 $(PROG_FLAGS)

$(BUILD)/progs/%.so: tests/progs/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -fPIC -shared -o $@ $<

$(BUILD)/progs/%: tests/progs/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -o $@ $< -lpthread -ldl -lm

$(BUILD)/progs/%: tests/progs/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(PROG_FLAGS) -o $@ $< -lpthread

# It must export its symbols like a real interpreter does.
$(BUILD)/progs/fake_python: tests/progs/fake_python.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -rdynamic -o $@ $<

# Not position-independent: its data's words read as heap addresses.
$(BUILD)/progs/pristine: tests/progs/pristine.c tests/progs/scrub.h
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -fno-pie -no-pie -o $@ $<

# Linked against a library whose constructor leaks before the agent starts.
$(BUILD)/progs/ctor_main: tests/progs/ctor_main.c $(BUILD)/progs/libctorleak.so
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -o $@ $< -L$(BUILD)/progs -lctorleak -Wl,-rpath,$(abspath $(BUILD)/progs)

# An inlined allocation site needs the optimizer.
$(BUILD)/progs/inline_leak: tests/progs/inline_leak.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -g -O2 -Wall -Wextra -o $@ $<
$(BUILD)/progs/inline2_leak: tests/progs/inline2_leak.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -g -O2 -Wall -Wextra -o $@ $< -lpthread

# A real leak of Debian's libevent (test_oracle): linked with it.
$(BUILD)/progs/evhttp_autofree: tests/progs/evhttp_autofree.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -o $@ $< -levent

# Two same-size libraries for the dlclose/dlopen address-reuse test.
$(BUILD)/progs/libreuse_a.so $(BUILD)/progs/libreuse_b.so: $(BUILD)/progs/libreuse_%.so: tests/progs/libreuse.c
	@mkdir -p $(dir $@)
	$(CC) $(PROG_CFLAGS) -fPIC -shared -DWHICH=$* -o $@ $<

# libdlstrip in three forms: stripped to its dynamic symbols; split from its
# debug info with a .gnu_debuglink; split with the debug file found by build-id.
$(BUILD)/progs/strip/libdlstrip.so: $(BUILD)/progs/libdlstrip.so
	@mkdir -p $(dir $@)
	strip --strip-all -o $@ $<
$(BUILD)/progs/split/libdlstrip.so: $(BUILD)/progs/libdlstrip.so
	@mkdir -p $(dir $@)
	objcopy --only-keep-debug $< $(dir $@)libdlstrip.debug
	strip --strip-all -o $@ $<
	objcopy --add-gnu-debuglink=$(dir $@)libdlstrip.debug $@
$(BUILD)/progs/buildid/libdlstrip.so: $(BUILD)/progs/libdlstrip.so
	@mkdir -p $(dir $@)
	strip --strip-all -o $@ $<
	id=$$(readelf -n $< | sed -n 's/.*Build ID: //p'); \
	mkdir -p $(dir $@)debug/.build-id/$$(echo $$id | cut -c1-2); \
	objcopy --only-keep-debug $< $(dir $@)debug/.build-id/$$(echo $$id | cut -c1-2)/$$(echo $$id | cut -c3-).debug

# libdlleak without frame pointers (rbp a general register): the fp unwinder must refuse it.
$(BUILD)/progs/nofp/libdlleak.so: tests/progs/libdlleak.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -g -O2 -fomit-frame-pointer -fPIC -shared -o $@ $<

TEST_VARIANTS = $(BUILD)/progs/nofp/libdlleak.so $(BUILD)/progs/libreuse_a.so $(BUILD)/progs/libreuse_b.so \
	$(BUILD)/progs/strip/libdlstrip.so $(BUILD)/progs/split/libdlstrip.so \
	$(BUILD)/progs/buildid/libdlstrip.so

progs: $(TEST_PROGS) $(filter-out %/libreuse.so,$(TEST_LIBS)) $(TEST_VARIANTS)

UNIT_AGENT_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(AGENT_CORE_SRC) $(PROTO_SRC)) $(PB_O)
UNIT_COLL_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(COLLECTORD_LIB_SRC) $(COMMON_SRC) $(PROTO_SRC)) $(PB_O)
UNIT_CLI_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(STACKCTL_LIB_SRC) $(COMMON_SRC) $(PROTO_SRC)) \
	$(PB_O) $(PPROF_O)

# Unit tests link the code of one program: test_agent_* the agent's (no
# interposition), test_cli_* stackctl's, the rest collectord's.
$(BUILD)/tests/test_agent_%: tests/unit/test_agent_%.c $(UNIT_AGENT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(COLL_CFLAGS) -o $@ $^ -lcmocka $(AGENT_LIBS)

$(BUILD)/tests/test_%: tests/unit/test_%.c $(UNIT_COLL_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(COLL_CFLAGS) -o $@ $^ -lcmocka $(COLL_LIBS)

# test_cli_*: stackctl's code (all of it but main.c), one rule for every such test.
$(BUILD)/tests/test_cli_%: tests/unit/test_cli_%.c $(UNIT_CLI_OBJ) | $(PPROF_H) $(HTML_ASSETS_H)
	@mkdir -p $(dir $@)
	$(CC) $(COLL_CFLAGS) -o $@ $< $(UNIT_CLI_OBJ) -lcmocka $(CLI_LIBS)

# TSan: the agent's ring, intern table and flusher under real threads.
$(BUILD)/tests/tsan_agent_core: tests/tsan/tsan_agent_core.c $(UNIT_AGENT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(COLL_CFLAGS) -o $@ $^ $(AGENT_LIBS)

unit: $(UNIT_BINS)

check-unit: unit
	@fail=""; for t in $(UNIT_BINS); do echo "== $$t"; $$t || fail="$$fail $$t"; done; \
	if [ -n "$$fail" ]; then echo "FAILED:$$fail"; exit 1; fi

# ------------------------------------------------------------------ top-level commands
deps:
	@sh scripts/deps.sh

check: deps
	$(MAKE) all progs unit
	$(MAKE) check-unit
	$(MAKE) check-layout
	$(MAKE) check-install
	$(MAKE) check-sanitizers
	$(MAKE) check-fuzz
	$(MAKE) check-integration
	$(MAKE) check-compat

# No import circle between the modules of these folders (x.c with x.h; A
# depends on B when A's .c or .h includes B's .h): scripts/import_graph.py
# prints each circle with its include lines. make check-layout LAYOUT_DIRS="..."
LAYOUT_DIRS ?= agent collector proto
check-layout:
	$(PYTHON) scripts/import_graph.py $(LAYOUT_DIRS)

check-integration: all progs
	$(PYTHON) tests/integration/run.py --build $(BUILD)

# The oracle comparison (issue 19.4): every program of the suite judged by
# valgrind at its ready point and by a scan, block by block; the table is
# printed and written to $(BUILD)/oracle.md. Part of make check too.
.PHONY: oracle
oracle: all progs
	STACKWATCH_ORACLE_OUT=$(BUILD)/oracle.md $(PYTHON) tests/integration/run.py --build $(BUILD) -k OracleSuiteTest -k OracleTest -k RealLeakTest -v

# LeakSanitizer's own lit tests (compiler-rt/test/lsan of LLVM 19.1.7, fetched
# from Debian's source archive into ~/.cache, never copied here) under
# stackwatch and valgrind beside what LeakSanitizer expects; by hand (a 164 MB
# download, ~5 min): the table goes to $(BUILD)/lsan-lit.md.
.PHONY: lsan-lit
lsan-lit: all
	d=$$(sh scripts/fetch-lsan-tests.sh) && \
	$(PYTHON) tests/lsanlit/run.py --build $(BUILD) --tests "$$d" --out $(BUILD)/lsan-lit.md

# Real Debian programs bare and under the agent (tests/compat/run.py): the
# quick ones here, all of them (ls -R /usr, redis-server under
# redis-benchmark) in `make soak`.
check-compat: all
	$(PYTHON) tests/compat/run.py --build $(BUILD) --quick

soak-deps:
	@sh scripts/soak-deps.sh

soak: deps soak-deps
	$(MAKE) all progs
	$(PYTHON) tests/compat/run.py --build $(BUILD) --all --markdown

# CPython versions built from Debian's source packages into
# $${STACKWATCH_PY_CACHE:-~/.cache/stackwatch/pythons} (scripts/build-python.sh;
# a few minutes each on 2 cores, reused after). `make check` tests the ones
# built; `make pythons` builds them; `make check-pythons` builds and tests
# them. A source that cannot be fetched (no network) is a loud skip; a build
# that fails is a failure.
PY_VERSIONS ?= 3.13 3.14 3.15
pythons:
	@for v in $(PY_VERSIONS); do \
	    sh scripts/build-python.sh $$v; rc=$$?; \
	    if [ $$rc = 2 ]; then \
	        echo "*** pythons: CPython $$v: source package not fetchable: NOT BUILT, NOT TESTED ***"; \
	    elif [ $$rc != 0 ]; then exit 1; fi; \
	done

check-pythons: all progs pythons
	$(PYTHON) tests/integration/run.py --build $(BUILD) -k Python3

check-sanitizers:
	$(MAKE) SANITIZER=address all unit
	$(MAKE) SANITIZER=address BUILD=build/asan check-unit
	$(MAKE) SANITIZER=undefined all progs
	$(MAKE) SANITIZER=thread all
	build/tsan/tests/tsan_agent_core
	TSAN_AGENT_FOLD_MS=1000 build/tsan/tests/tsan_agent_core
	build/tsan/tests/test_agent_ring
	$(PYTHON) tests/integration/run.py --build build/ubsan --agent-build build/ubsan \
		--quick
	$(PYTHON) tests/integration/run.py --build build/asan --agent-build build \
		--progs build/progs --quick

FUZZ_CC ?= clang
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. -Iproto -Ibuild/fuzz/gen
build/fuzz/gen/proto/stackwatch.pb-c.c: proto/stackwatch.proto
	@mkdir -p build/fuzz/gen
	protoc-c --c_out=build/fuzz/gen $<

# The collector's code is compiled once for every fuzzer (objects under
# build/fuzz/obj), each target links it with its own harness.
FUZZ_LIB_SRC = build/fuzz/gen/proto/stackwatch.pb-c.c $(COLLECTORD_LIB_SRC) $(COMMON_SRC) $(PROTO_SRC)
FUZZ_LIB_OBJ = $(patsubst %.c,build/fuzz/obj/%.o,$(FUZZ_LIB_SRC))
build/fuzz/obj/%.o: %.c build/fuzz/gen/proto/stackwatch.pb-c.c $(wildcard collector/*/*.h proto/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -c -o $@ $<

.SECONDARY: $(FUZZ_LIB_OBJ)
build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB_OBJ) $(COLL_LIBS)

# Every decoder has a target: agent frames and control requests as collectord
# reads them, collectord's commands as the agent reads them, replies as
# stackctl reads and renders them. Seeds: tests/fuzz/make_seeds.py.
build/fuzz/gen/pprof/profile.pb-c.c: $(PPROF_PROTO)
	@mkdir -p build/fuzz/gen/pprof
	protoc-c --proto_path=$(dir $<) --c_out=build/fuzz/gen/pprof $<

AGENT_FUZZ_SRC = $(AGENT_CORE_SRC) $(PROTO_SRC)
build/fuzz/fuzz_agent_commands: tests/fuzz/fuzz_agent_commands.c build/fuzz/gen/proto/stackwatch.pb-c.c \
		$(AGENT_FUZZ_SRC) $(wildcard agent/*.h proto/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -I$(PYTHON_INCLUDE) -DUNW_LOCAL_ONLY -o $@ $< \
		build/fuzz/gen/proto/stackwatch.pb-c.c $(AGENT_FUZZ_SRC) $(AGENT_LIBS)

CLI_FUZZ_SRC = $(STACKCTL_LIB_SRC) $(COMMON_SRC) $(PROTO_SRC)
build/fuzz/fuzz_cli_replies: tests/fuzz/fuzz_cli_replies.c build/fuzz/gen/proto/stackwatch.pb-c.c \
		build/fuzz/gen/pprof/profile.pb-c.c build/fuzz/gen/html_assets.h $(CLI_FUZZ_SRC) \
		$(wildcard collector/*/*.h proto/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< build/fuzz/gen/proto/stackwatch.pb-c.c \
		build/fuzz/gen/pprof/profile.pb-c.c $(CLI_FUZZ_SRC) $(CLI_LIBS)

FUZZERS = build/fuzz/fuzz_agent_frames build/fuzz/fuzz_ctl_requests build/fuzz/fuzz_agent_commands \
	build/fuzz/fuzz_cli_replies build/fuzz/fuzz_metrics_request build/fuzz/fuzz_store_record
fuzz: $(FUZZERS)

# A short run of each (seconds), from its seeds; `make fuzz-long` runs each
# for FUZZ_SECONDS (docs/RELIABILITY.md has the figures of the long runs).
FUZZ_RUNS ?= 20000
FUZZ_RUNS_fuzz_ctl_requests ?= 3000
check-fuzz: $(FUZZERS)
	@set -e; $(foreach f,$(FUZZERS),n=$(notdir $(f)); echo "== $$n"; mkdir -p build/fuzz/corpus-$$n; \
		$(f) -runs=$(or $(FUZZ_RUNS_$(notdir $(f))),$(FUZZ_RUNS)) -max_len=16384 -seed=1 \
		build/fuzz/corpus-$$n tests/fuzz/seeds/$${n#fuzz_};)

FUZZ_SECONDS ?= 1500
fuzz-long: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
		$$f -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -print_final_stats=1 \
		build/fuzz/corpus-$$n tests/fuzz/seeds/$${n#fuzz_} 2>&1 | tee build/fuzz/long-$$n.log; \
	done

demo: deps
	$(MAKE) all progs
	@sh scripts/demo.sh $(BUILD)

# ------------------------------------------------------------------ install
# make install [PREFIX=/usr/local] [DESTDIR=/staging]: programs, the agent,
# man pages, the Python helper where Debian's python3 finds it, a systemd
# user unit and bash completion. make uninstall removes exactly those files.
VERSION = $(shell sed -n 's/^\#define STACKWATCH_VERSION "\(.*\)"/\1/p' collector/common/version.h)
BINDIR = $(PREFIX)/bin
LIBDIR = $(PREFIX)/lib
MANDIR = $(PREFIX)/share/man
UNITDIR = $(PREFIX)/lib/systemd/user
COMPDIR = $(PREFIX)/share/bash-completion/completions
# Debian's python3 reads /usr/lib/python3/dist-packages (packages) and
# /usr/local/lib/python3.X/dist-packages (local installs).
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PREFIX),/usr)
PYDIR ?= /usr/lib/python3/dist-packages
else
PYDIR ?= $(PREFIX)/lib/python$(PYVER)/dist-packages
endif
MANPAGES = collectord.8 stackctl.1 stackwatch.7
INSTALLED = $(BINDIR)/collectord $(BINDIR)/stackctl $(LIBDIR)/libstackagent.so \
	$(MANDIR)/man8/collectord.8 $(MANDIR)/man1/stackctl.1 $(MANDIR)/man7/stackwatch.7 \
	$(PYDIR)/stackwatch.py $(PYDIR)/stackwatch_pytest.py $(UNITDIR)/collectord.service \
	$(COMPDIR)/stackctl
SUBST = sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
	-e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@UNITDIR@|$(UNITDIR)|g'

.PHONY: uninstall check-install
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(PYDIR) \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(COMPDIR)
	install -m 0755 $(BUILD)/collectord $(BUILD)/stackctl $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BUILD)/libstackagent.so $(DESTDIR)$(LIBDIR)/
	for m in $(MANPAGES); do s=$${m##*.}; \
		$(SUBST) docs/man/$$m > $(DESTDIR)$(MANDIR)/man$$s/$$m.tmp && \
		chmod 0644 $(DESTDIR)$(MANDIR)/man$$s/$$m.tmp && \
		mv $(DESTDIR)$(MANDIR)/man$$s/$$m.tmp $(DESTDIR)$(MANDIR)/man$$s/$$m; done
	install -m 0644 python/stackwatch.py $(DESTDIR)$(PYDIR)/stackwatch.py
	install -m 0644 python/stackwatch_pytest.py $(DESTDIR)$(PYDIR)/stackwatch_pytest.py
	$(SUBST) scripts/collectord.service.in > $(DESTDIR)$(UNITDIR)/collectord.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/collectord.service
	install -m 0644 scripts/stackctl.bash $(DESTDIR)$(COMPDIR)/stackctl

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

# Installs into a temporary DESTDIR and checks what a user gets: the man
# pages render without warnings, --version, the Python module imports with
# Debian's python3 path, completion answers, and uninstall leaves nothing.
check-install: all
	$(PYTHON) tests/install/check_install.py --build $(BUILD)

clean:
	rm -rf build

# ------------------------------------------------------------------ benchmarks
# Not part of `make check` (bench/README.md). BENCH_ARGS passes options to
# bench/run.py, e.g. make bench BENCH_ARGS="--runs 3 --only loop --markdown".
BENCH_ARGS ?=
.PHONY: bench bench-deps
bench-deps:
	@sh scripts/bench-deps.sh

bench: all bench-deps
	$(PYTHON) bench/run.py --build $(BUILD) $(BENCH_ARGS)
	$(MAKE) bench-collector
	$(PYTHON) bench/firstq.py --build $(BUILD)
	$(MAKE) bench-scan

# The reachability scan on a process with N live blocks (bench/README.md,
# "Reachability scan"). BENCH_SCAN_ARGS passes options, e.g. --blocks 1000000.
BENCH_SCAN_ARGS ?=
.PHONY: bench-scan
bench-scan: $(BUILD)/libstackagent.so $(BUILD)/collectord $(BUILD)/stackctl
	$(PYTHON) bench/scan/run.py --build $(BUILD) $(BENCH_SCAN_ARGS)

# collectord's ingest rate and memory per live block, driven by a fake agent
# (bench/collector/README.md). BENCH_COLLECTOR_ARGS passes options to the
# driver, e.g. make bench-collector BENCH_COLLECTOR_ARGS="--live 1000000".
BENCH_COLLECTOR_ARGS ?=
.PHONY: bench-collector
$(BUILD)/bench/ingest: bench/collector/ingest.c $(PROTO_SRC) proto/frame.h $(PB_O) $(PB_H)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(COLL_CFLAGS)) -o $@ bench/collector/ingest.c $(PROTO_SRC) \
		$(PB_O) -lprotobuf-c

bench-collector: $(BUILD)/collectord $(BUILD)/stackctl $(BUILD)/bench/ingest
	$(PYTHON) bench/collector/run.py --build $(BUILD) $(BENCH_COLLECTOR_ARGS)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
