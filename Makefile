# Builds libcell (static library), cell-init (static, embedded into the CLI),
# build/cell (the CLI) and build/cell-daemon (`cell serve` execs it).
# `make test` runs every test; `make asan` runs them under ASan+UBSan.
#
# Link units (issue 11): build/cell links libcell, libseccomp and nothing
# else (jansson statically), so that `cell run` and `cell help` start fast;
# the owner's side of the egress engine (nftables, OpenSSL...) and lane
# export/import (libarchive) are plugins (src/runtime/plugin.h) embedded in
# it and dlopen()ed only when a cell has a policy or a lane is exported or
# imported.  cell-daemon embeds and loads them the same way; the unit tests
# and the benches link their tables in ($(LIBCELL_BUILTINS)) with $(LIBS).

CC      ?= cc
BUILD   ?= build
SAN     ?=
OPT     ?= -O2
PYTHON  ?= /usr/bin/python3

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
# Hardening (issue 9): stack canaries and clash probes, CET branch markers,
# position-independent executables with full RELRO and immediate binding.
# _FORTIFY_SOURCE=3 needs optimisation and is left out of sanitizer builds,
# whose interceptors already check the same calls.
HARDEN  := -fstack-protector-strong -fstack-clash-protection -fcf-protection -fPIE
LDHARD  := -pie -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack
CFLAGS  := -std=c17 -D_GNU_SOURCE $(OPT) -g $(WARN) $(HARDEN) -Iinclude -Isrc -fno-strict-aliasing
ifneq ($(SAN),)
CFLAGS  += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDSAN   := -fsanitize=$(SAN)
else
CFLAGS  += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3
endif
# LDSAN is what every link gets: the sanitizer runtime and the hardening.
LDSAN   += $(LDHARD)
LIBS    := $(shell pkg-config --libs libseccomp libarchive jansson nettle libnftables libnftnl libmnl ldns libcrypto libssl 2>/dev/null || echo -lseccomp -larchive -ljansson -lnettle -lnftables -lnftnl -lmnl -lldns -lcrypto -lssl) -lhttp_parser -lpthread
# The daemon (src/server, src/store) adds these.
# libcurl is not linked: src/server/egress.c loads it on the first decide
# webhook question; nettle hashes tokens (src/store/store.c).
SRV_LIBS := $(shell pkg-config --libs libmicrohttpd sqlite3 libcrypto nettle gnutls 2>/dev/null || echo -lmicrohttpd -lsqlite3 -lcrypto -lnettle -lgnutls) -lpthread

# cell-init runs inside images that may lack our shared libraries, so it is
# linked statically and never sanitized (ASan cannot be static).
INIT_CFLAGS := -std=c17 -D_GNU_SOURCE -O2 -g $(WARN) $(HARDEN) -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3 -Iinclude -Isrc

UTIL_SRC    := $(wildcard src/util/*.c)
INIT_SRC    := $(filter-out src/init/blob.S,$(wildcard src/init/*.c))
LIB_SRC     := $(filter-out src/net/engine.c,$(wildcard src/isolate/*.c src/runtime/*.c src/net/*.c)) src/init/proto.c $(UTIL_SRC)
# The egress helper (docs/security.md): the engine in a process of its own per
# policed cell, embedded in libcell like cell-init; it links what the engine
# needs and nothing of the store, server or isolation code.
EGRESS_SRC  := src/egress/main.c $(filter-out src/net/sep.c src/net/sep_check.c,$(wildcard src/net/*.c)) src/init/proto.c $(UTIL_SRC)
EGRESS_LIBS := -Wl,--as-needed $(shell pkg-config --libs libseccomp jansson libnftables libnftnl libmnl ldns libcrypto libssl 2>/dev/null || echo -lseccomp -ljansson -lnftables -lnftnl -lmnl -lldns -lcrypto -lssl) -lhttp_parser -lpthread
# The tar parser of uploads (src/runtime/untar.c): a program of its own per
# upload, embedded in libcell the same way; libarchive and libseccomp only.
UNTAR_SRC   := src/untar/main.c $(UTIL_SRC)
UNTAR_LIBS  := -Wl,--as-needed $(shell pkg-config --libs libseccomp libarchive 2>/dev/null || echo -lseccomp -larchive)
SRV_SRC     := $(wildcard src/server/*.c src/store/*.c)
CLI_SRC     := $(wildcard src/cli/*.c)
DAEMON_SRC  := src/daemon/main.c src/daemon/options.c src/cli/serve_usage.c src/cli/fail.c
# cell-daemon alone reads the config file (libinih), never the lean cell.
DAEMON_LIBS := $(shell pkg-config --libs inih 2>/dev/null || echo -linih)
# The lean CLI: libseccomp, with jansson, nettle (the image store's
# SHA-256) and http_parser (the client commands' HTTP/1.1, src/cli/http1.c)
# linked in.
CLI_LIBS    := -Wl,--as-needed $(shell pkg-config --libs libseccomp 2>/dev/null || echo -lseccomp) \
               -Wl,-Bstatic -ljansson -lnettle -lhttp_parser -Wl,-Bdynamic -lpthread
# Programs that link libcell.a with its plugins' code built in.
LIBCELL_BUILTINS := -Wl,-u,runtime_net_builtin -Wl,-u,runtime_archive_builtin -Wl,-u,runtime_vfs_builtin
# The plugins (shared objects, position-independent objects in obj-pic/):
# each carries its own copy of util and proto and exports one symbol.
NETPLUG_SRC  := src/plugin/net.c src/net/sep.c src/net/sep_check.c src/net/policy.c src/net/httppath.c \
                src/net/screen.c src/net/netns.c src/init/proto.c $(UTIL_SRC)
NETPLUG_LIBS := -Wl,--as-needed $(shell pkg-config --libs jansson libnftables libnftnl libmnl libcrypto 2>/dev/null || echo -ljansson -lnftables -lnftnl -lmnl -lcrypto) -lpthread
ARCHPLUG_SRC := src/plugin/archive.c src/plugin/tar_dir.c src/runtime/lane_archive.c src/runtime/image_tar.c $(UTIL_SRC)
ARCHPLUG_LIBS := -Wl,--as-needed $(shell pkg-config --libs libarchive 2>/dev/null || echo -larchive) -lpthread
# Virtual filesystems (src/runtime/vfs.h): the FUSE server and libfuse.
FUSE_CFLAGS  := $(shell pkg-config --cflags fuse3 2>/dev/null || echo -I/usr/include/fuse3)
FUSE_LIBS    := $(shell pkg-config --libs fuse3 2>/dev/null || echo -lfuse3)
VFSPLUG_SRC  := src/plugin/vfs.c src/runtime/vfs_fuse.c $(UTIL_SRC)
VFSPLUG_LIBS := -Wl,--as-needed $(FUSE_LIBS) -lpthread
LIBS         += $(FUSE_LIBS)
PIC_CFLAGS  := $(filter-out -fPIE,$(CFLAGS)) -fPIC
# -z defs: a plugin must not need a symbol of the program that loads it (not
# in sanitizer builds, where clang leaves the runtime's symbols to the program).
LDPLUG      := -shared $(filter-out -pie,$(LDSAN)) -Wl,--version-script=src/plugin/plugin.map $(if $(SAN),,-Wl,-z,defs)
UNIT_SRC    := $(wildcard tests/unit/test_*.c)

LIB_OBJ     := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/src/init/blob.o $(BUILD)/obj/src/net/egress_blob.o \
               $(BUILD)/obj/src/runtime/untar_blob.o $(BUILD)/obj/src/isolate/seccomp_blob.o
UNTAR_OBJ   := $(UNTAR_SRC:%.c=$(BUILD)/obj/%.o)
EGRESS_OBJ  := $(EGRESS_SRC:%.c=$(BUILD)/obj/%.o)
INIT_OBJ    := $(sort $(INIT_SRC:%.c=$(BUILD)/obj-init/%.o) $(UTIL_SRC:%.c=$(BUILD)/obj-init/%.o))
SRV_OBJ     := $(SRV_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/src/agent/blob.o
PLUGIN_BLOBS := $(BUILD)/obj/src/plugin/net_blob.o $(BUILD)/obj/src/plugin/archive_blob.o $(BUILD)/obj/src/plugin/vfs_blob.o
CLI_OBJ     := $(CLI_SRC:%.c=$(BUILD)/obj/%.o) $(PLUGIN_BLOBS)
# The daemon loads the plugins too (an idle daemon maps no libnftables,
# libarchive, ICU or libstdc++); --as-needed keeps only what its own code uses.
DAEMON_OBJ  := $(DAEMON_SRC:%.c=$(BUILD)/obj/%.o) $(PLUGIN_BLOBS)
NETPLUG_OBJ := $(NETPLUG_SRC:%.c=$(BUILD)/obj-pic/%.o) $(BUILD)/obj/src/net/egress_blob.o
ARCHPLUG_OBJ := $(ARCHPLUG_SRC:%.c=$(BUILD)/obj-pic/%.o)
VFSPLUG_OBJ := $(VFSPLUG_SRC:%.c=$(BUILD)/obj-pic/%.o)
PLUGINS     := $(BUILD)/libcell-net.so $(BUILD)/libcell-archive.so $(BUILD)/libcell-vfs.so
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test unit integration asan tsan check clean deps bench bench-bin fuzz
all: $(BUILD)/cell $(BUILD)/cell-daemon $(PLUGINS) $(BUILD)/cell-init $(BUILD)/cell-mock-agent $(BUILD)/cell-egress $(BUILD)/cell-untar $(BUILD)/libcell.a $(BUILD)/libcellsrv.a \
     $(BUILD)/libcell.so.0 $(BUILD)/libcell-public.a $(BUILD)/cell-oci

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj-pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(PIC_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj-init/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(INIT_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/cell-init: $(INIT_OBJ)
	$(CC) -static-pie $(filter-out -pie,$(LDHARD)) -o $@ $^

$(BUILD)/obj/src/init/blob.o: src/init/blob.S $(BUILD)/cell-init
	@mkdir -p $(dir $@)
	$(CC) -c -DCELL_INIT_PATH='"$(BUILD)/cell-init"' $< -o $@

# The mock ACP agent (src/agent/mock.c) runs inside cells: static like
# cell-init (any image can run it), jansson linked in, never sanitized.
$(BUILD)/cell-mock-agent: $(BUILD)/obj-init/src/agent/mock.o
	$(CC) -static-pie $(filter-out -pie,$(LDHARD)) -o $@ $^ -ljansson

$(BUILD)/obj/src/agent/blob.o: src/agent/blob.S $(BUILD)/cell-mock-agent
	@mkdir -p $(dir $@)
	$(CC) -c -DCELL_MOCK_AGENT_PATH='"$(BUILD)/cell-mock-agent"' $< -o $@

$(BUILD)/cell-egress: $(EGRESS_OBJ)
	$(CC) $(LDSAN) -o $@ $^ $(EGRESS_LIBS)

$(BUILD)/obj/src/net/egress_blob.o: src/net/egress_blob.S $(BUILD)/cell-egress
	@mkdir -p $(dir $@)
	$(CC) -c -DCELL_EGRESS_PATH='"$(BUILD)/cell-egress"' $< -o $@

$(BUILD)/cell-untar: $(UNTAR_OBJ)
	$(CC) $(LDSAN) -o $@ $^ $(UNTAR_LIBS)

$(BUILD)/obj/src/runtime/untar_blob.o: src/runtime/untar_blob.S $(BUILD)/cell-untar
	@mkdir -p $(dir $@)
	$(CC) -c -DCELL_UNTAR_PATH='"$(BUILD)/cell-untar"' $< -o $@

# The cells' seccomp programs, compiled here once by src/isolate/seccomp.c
# (libseccomp) and embedded in libcell, instead of by every process that
# starts cells; tests/unit/test_seccomp.c checks they are byte for byte what
# libseccomp builds at run time.
SECCOMPGEN_OBJ := $(BUILD)/obj/src/seccompgen/main.o $(BUILD)/obj/src/isolate/seccomp.o $(UTIL_SRC:%.c=$(BUILD)/obj/%.o)
$(BUILD)/seccompgen: $(SECCOMPGEN_OBJ)
	$(CC) $(LDSAN) -o $@ $^ $(shell pkg-config --libs libseccomp 2>/dev/null || echo -lseccomp)

$(BUILD)/seccomp/cell.bpf: $(BUILD)/seccompgen
	@mkdir -p $(dir $@)
	$(BUILD)/seccompgen $(BUILD)/seccomp

$(BUILD)/obj/src/isolate/seccomp_blob.o: src/isolate/seccomp_blob.S $(BUILD)/seccomp/cell.bpf
	@mkdir -p $(dir $@)
	$(CC) -c -DSECCOMP_CELL_PATH='"$(BUILD)/seccomp/cell.bpf"' -DSECCOMP_NOSUID_PATH='"$(BUILD)/seccomp/nosuid.bpf"' $< -o $@

$(BUILD)/libcell.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# libcell as a shared library for programs outside this tree (docs/libcell.md):
# libcell.a's code built position-independent, the plugins embedded as in the
# lean cell, and only the functions of include/cell.h exported, under version
# nodes (src/libcell.map; scripts/check-exports.sh checks both agree).
# The code goes through an archive, as libcell.a does for the lean cell, so
# that only what the exported functions reach is linked (not src/net's
# builtin tables: the embedded plugin is the .so's network code); the blobs,
# which plugin.c references weakly, are linked whole.
LIBCELL_API := $(shell sed -n 's/^ *\(cell_[a-z0-9_]*\);.*/\1/p' src/libcell.map)
LIBSO_BLOBS := $(filter-out $(LIB_SRC:%.c=$(BUILD)/obj/%.o),$(LIB_OBJ)) \
               $(BUILD)/obj/src/plugin/net_blob.o $(BUILD)/obj/src/plugin/archive_blob.o \
               $(BUILD)/obj/src/plugin/vfs_blob.o
$(BUILD)/libcell-pic.a: $(LIB_SRC:%.c=$(BUILD)/obj-pic/%.o)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libcell.so.0: $(BUILD)/libcell-pic.a $(LIBSO_BLOBS) src/libcell.map
	$(CC) -shared $(filter-out -pie,$(LDSAN)) -Wl,-soname,libcell.so.0 -Wl,--version-script=src/libcell.map \
	  $(if $(SAN),,-Wl,-z,defs) $(LIBCELL_API:%=-Wl,-u,%) -o $@ $(LIBSO_BLOBS) $(BUILD)/libcell-pic.a \
	  -Wl,--as-needed $(LIBS)

# A program that links the .so and nothing else of ours (test_libcell_so.py).
$(BUILD)/tests/libcell_so_smoke: tests/integration/libcell_so_smoke.c $(BUILD)/libcell.so.0
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< -L$(BUILD) -l:libcell.so.0 -Wl,-rpath,'$$ORIGIN/..'

# The static form of libcell.so.0 for programs outside this tree: one object
# (ld -r) of what the exported functions reach in libcell.a, the blobs whole,
# with every symbol but those of src/libcell.map made local, so a program
# linking it sees only cell_* (libcell.a keeps its internals global for the
# CLI, the daemon and the tests, which call them).
$(BUILD)/libcell-public.a: $(BUILD)/libcell.a $(LIBSO_BLOBS) src/libcell.map
	printf '%s\n' $(LIBCELL_API) >$@.syms
	$(LD) -r $(LIBCELL_API:%=-u %) -o $@.o $(LIBSO_BLOBS) $(BUILD)/libcell.a
	objcopy --keep-global-symbols=$@.syms $@.o
	rm -f $@ && ar rcs $@ $@.o && rm -f $@.o $@.syms

$(BUILD)/tests/libcell_static_smoke: tests/integration/libcell_so_smoke.c $(BUILD)/libcell-public.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DCELL_SMOKE_STATIC $(LDSAN) -o $@ $< $(BUILD)/libcell-public.a -Wl,--as-needed $(LIBS)

# The OpenAPI document is .incbin'ed; -MMD cannot see that.
$(BUILD)/obj/src/server/openapi.o: docs/openapi.json
# So is the runs' diff script (rundiff.c).
$(BUILD)/obj/src/server/rundiff.o: src/server/rundiff.sh

# The Inspector web UI (ui/, docs/ui.md), embedded in the daemon by
# src/server/ui.c (.incbin; -MMD cannot see that either).  Reproducible: npm
# ci installs exactly ui/package-lock.json into the build directory (never
# into ui/, which several build directories share), then esbuild bundles
# ui/src with fixed options into index.html, app.js and app.css.  Without
# npm or its registry the build stops here and says so.
UI_OUT  := $(BUILD)/ui
UI_DEPS := $(UI_OUT)/deps
$(UI_DEPS)/.stamp: ui/package.json ui/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "the Inspector UI (ui/) needs node and npm: run scripts/install-deps.sh" >&2; exit 1; }
	rm -rf $(UI_DEPS) && mkdir -p $(UI_DEPS) && cp ui/package.json ui/package-lock.json $(UI_DEPS)/
	cd $(UI_DEPS) && npm ci --no-audit --no-fund --loglevel=error || \
	  { echo "the Inspector UI (ui/): npm ci from ui/package-lock.json failed: the npm registry must be reachable" >&2; exit 1; }
	touch $@
$(UI_OUT)/app.js: $(UI_DEPS)/.stamp $(wildcard ui/src/*)
	NODE_PATH=$(abspath $(UI_DEPS)/node_modules) $(UI_DEPS)/node_modules/.bin/esbuild ui/src/main.js --bundle \
	  --minify --format=iife --target=es2020 --charset=utf8 --legal-comments=eof --log-level=warning \
	  --outdir=$(UI_OUT) --entry-names=app
$(UI_OUT)/app.css: $(UI_OUT)/app.js
$(UI_OUT)/index.html: ui/index.html
	@mkdir -p $(dir $@)
	cp $< $@
$(BUILD)/obj/src/server/ui.o: CFLAGS += -DCELL_UI_DIR='"$(UI_OUT)"'
$(BUILD)/obj/src/server/ui.o: $(UI_OUT)/index.html $(UI_OUT)/app.js $(UI_OUT)/app.css

# libcellsrv: the daemon's modules (server, store), on top of libcell.
$(BUILD)/libcellsrv.a: $(SRV_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libcell-net.so: $(NETPLUG_OBJ) src/plugin/plugin.map
	$(CC) $(LDPLUG) -o $@ $(NETPLUG_OBJ) $(NETPLUG_LIBS)

$(BUILD)/libcell-archive.so: $(ARCHPLUG_OBJ) src/plugin/plugin.map
	$(CC) $(LDPLUG) -o $@ $(ARCHPLUG_OBJ) $(ARCHPLUG_LIBS)

$(BUILD)/libcell-vfs.so: $(VFSPLUG_OBJ) src/plugin/plugin.map
	$(CC) $(LDPLUG) -o $@ $(VFSPLUG_OBJ) $(VFSPLUG_LIBS)

$(BUILD)/obj/src/runtime/vfs_fuse.o: CFLAGS += $(FUSE_CFLAGS)
$(BUILD)/obj-pic/src/runtime/vfs_fuse.o: PIC_CFLAGS += $(FUSE_CFLAGS)

$(BUILD)/obj/src/plugin/%_blob.o: src/plugin/blob.S $(BUILD)/libcell-%.so
	@mkdir -p $(dir $@)
	$(CC) -c -DCELL_PLUGIN_NAME=$* -DCELL_PLUGIN_PATH='"$(BUILD)/libcell-$*.so"' $< -o $@

$(BUILD)/cell: $(CLI_OBJ) $(BUILD)/libcell.a
	$(CC) $(LDSAN) -o $@ $(CLI_OBJ) $(BUILD)/libcell.a $(CLI_LIBS)

$(BUILD)/cell-daemon: $(DAEMON_OBJ) $(BUILD)/libcellsrv.a $(BUILD)/libcell.a
	$(CC) $(LDSAN) -o $@ $(DAEMON_OBJ) $(BUILD)/libcellsrv.a $(BUILD)/libcell.a -Wl,--as-needed $(LIBS) $(SRV_LIBS) $(DAEMON_LIBS)

# cell-oci (src/oci, docs/oci.md): the runc-compatible OCI runtime.  It
# links cell's confinement from src/isolate (user namespaces, capabilities,
# the prebuilt seccomp programs, /proc masks) and util, plus jansson and
# libseccomp (a spec's own linux.seccomp), none of the daemon's libraries.
OCI_SRC     := $(wildcard src/oci/*.c)
# The CLI's HTTP/1.1 client (http1.c, http_parser) talks to the node daemon
# for a pod's egress (oci_egress.c).
OCI_ISOLATE := $(addprefix $(BUILD)/obj/src/isolate/,userns.o vmclone.o caps.o inroot.o seccomp_prebuilt.o seccomp_blob.o) \
               $(BUILD)/obj/src/cli/http1.o $(UTIL_SRC:%.c=$(BUILD)/obj/%.o)
OCI_LIBS    := -Wl,--as-needed $(shell pkg-config --libs jansson libseccomp 2>/dev/null || echo -ljansson -lseccomp) -lhttp_parser
$(BUILD)/cell-oci: $(OCI_SRC:%.c=$(BUILD)/obj/%.o) $(OCI_ISOLATE)
	$(CC) $(LDSAN) -o $@ $^ $(OCI_LIBS)

# The Kubernetes node image (deploy/kubernetes, docs/kubernetes.md): its
# cell-oci runs on the node's own filesystem, which need not have jansson,
# libseccomp or http_parser, so it is linked statically (ld warns about
# getaddrinfo: cell-oci dials the node daemon's unix socket only).  Not
# with SAN (no static sanitizer runtimes).  node-image writes the OCI image
# layout tar with build-image.py (about a second; test_k8s_deploy.py).
$(BUILD)/cell-oci-static: $(OCI_SRC:%.c=$(BUILD)/obj/%.o) $(OCI_ISOLATE)
	$(if $(SAN),$(error cell-oci-static and node-image: not with SAN=$(SAN)))
	$(CC) -static-pie $(filter-out -pie,$(LDHARD)) -o $@ $^ -ljansson -lseccomp -lhttp_parser
.PHONY: node-image
node-image: $(BUILD)/cell $(BUILD)/cell-daemon $(PLUGINS) $(BUILD)/cell-egress $(BUILD)/cell-untar $(BUILD)/cell-oci-static
	$(PYTHON) deploy/kubernetes/build-image.py --build $(BUILD) --output $(BUILD)/cell-node-image.tar

# The spec parser's unit test links the parser alone.
$(BUILD)/tests/test_oci_spec: tests/unit/test_oci_spec.c $(BUILD)/obj/src/oci/oci_spec.o $(BUILD)/obj/src/oci/oci_log.o \
                              $(UTIL_SRC:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $^ $(OCI_LIBS) -lcmocka

# linux.seccomp's translation alone (flags, errnos, refusals).
$(BUILD)/tests/test_oci_seccomp: tests/unit/test_oci_seccomp.c $(BUILD)/obj/src/oci/oci_seccomp.o \
                                 $(BUILD)/obj/src/oci/oci_log.o $(UTIL_SRC:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $^ $(OCI_LIBS) -lcmocka

# cell-daemon's option table (src/daemon/options.c) is in no library.
DAEMON_OPTS_OBJ := $(BUILD)/obj/src/daemon/options.o $(BUILD)/obj/src/cli/serve_usage.o $(BUILD)/obj/src/cli/fail.o
$(BUILD)/tests/test_daemon_opts: tests/unit/test_daemon_opts.c $(DAEMON_OPTS_OBJ) $(BUILD)/libcellsrv.a $(BUILD)/libcell.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< $(DAEMON_OPTS_OBJ) $(BUILD)/libcellsrv.a $(BUILD)/libcell.a $(LIBCELL_BUILTINS) $(LIBS) $(SRV_LIBS) $(DAEMON_LIBS) -lcmocka

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libcellsrv.a $(BUILD)/libcell.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< $(BUILD)/libcellsrv.a $(BUILD)/libcell.a $(LIBCELL_BUILTINS) $(LIBS) $(SRV_LIBS) -lcmocka

# A stamp that depends on every unit-test binary, so scripts can build them all.
$(BUILD)/tests/.stamp: $(UNIT_BIN) $(BUILD)/tests/libcell_so_smoke $(BUILD)/tests/libcell_static_smoke
	@mkdir -p $(dir $@) && touch $@

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	CELL_BIN=$(abspath $(BUILD)/cell) $(PYTHON) -m pytest -q tests/integration

test: unit integration

# Everything CI runs: release and ASan+UBSan builds, unit and integration tests.
check:
	bash scripts/test.sh

asan:
	$(MAKE) BUILD=build-asan SAN=address,undefined OPT=-O1 test

# ThreadSanitizer: libcell, the daemon and the CLI (cell-init stays
# unsanitized and static), then the daemon's integration tests; a TSan
# report in a daemon's stderr fails the test that ran it (daemon.py).
TSAN_TESTS ?= $(wildcard tests/integration/test_daemon_*.py) tests/integration/test_agents.py tests/integration/test_runs_drive.py
tsan:
	$(MAKE) BUILD=build-tsan SAN=thread OPT=-O1 all
	TSAN_OPTIONS="$${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1 suppressions=$(abspath tests/tsan.supp)}" \
	CELL_BIN=$(abspath build-tsan/cell) $(PYTHON) -m pytest -q -p no:cacheprovider $(TSAN_TESTS)

# Benchmark drivers, built here with the build's own flags and library
# variables so that a new dependency of libcell cannot break them (the
# scripts in bench/ call `make bench-bin` and use these; CI smoke-runs them).
# bench_phases wraps internal libcell functions (-Wl,--wrap) to time the
# phases of a cold start. net_bench runs on the host, in cells and in pasta's
# and slirp4netns's namespaces, so it is static and, like cell-init, never
# sanitized; tls_bench runs on the host and in cells on the host image.
BENCH_WRAPS := runtime_image_rootfs isolate_cgroup_create runtime_userns_for_slot isolate_boot \
               isolate_cgroup_open_self_attach ctl_recv isolate_cgroup_kill \
               isolate_cgroup_destroy util_rm_rf
BENCH_BIN   := $(addprefix $(BUILD)/bench/,bench_cell bench_phases http_bench net_bench tls_bench vfs_bench)
bench-bin: $(BENCH_BIN)

$(BUILD)/bench/vfs_bench: bench/vfs_bench.c $(BUILD)/libcell.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< $(BUILD)/libcell.a $(LIBCELL_BUILTINS) $(LIBS)

$(BUILD)/bench/bench_cell: bench/bench_cell.c $(BUILD)/libcell.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< $(BUILD)/libcell.a $(LIBCELL_BUILTINS) $(LIBS)

$(BUILD)/bench/bench_phases: bench/bench_cell.c $(BUILD)/libcell.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DCELL_BENCH_PHASES $(LDSAN) -o $@ $< $(BUILD)/libcell.a $(LIBCELL_BUILTINS) $(LIBS) $(BENCH_WRAPS:%=-Wl,--wrap=%)

$(BUILD)/bench/http_bench: bench/http_bench.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDSAN) -o $@ $< -ljansson

$(BUILD)/bench/net_bench: bench/net_bench.c
	@mkdir -p $(dir $@)
	$(CC) $(INIT_CFLAGS) -static-pie $(filter-out -pie,$(LDHARD)) -o $@ $<

$(BUILD)/bench/tls_bench: bench/tls_bench.c
	@mkdir -p $(dir $@)
	$(CC) $(INIT_CFLAGS) $(LDHARD) -o $@ $< -Wl,--as-needed $(LIBS)

# Every benchmark at its default settings (long; bench/*.sh say how to shorten).
bench: all bench-bin
	bash bench/run.sh
	bash bench/daemon.sh
	bash bench/egress.sh
	bash bench/fs_api.sh
	bash bench/agents.sh
	bash bench/runs.sh
	bash bench/faststart.sh
	bash bench/load_check.sh

# libFuzzer targets (clang).  `make fuzz` runs each briefly, as CI does;
# FUZZ_SECONDS=600 make fuzz for a longer run by hand.
FUZZ_SECONDS ?= 10
FUZZ_CC      ?= clang
FUZZ_FLAGS   := -std=c17 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -fsanitize=fuzzer,address,undefined
$(BUILD)/fuzz/fuzz_proto: fuzz/fuzz_proto.c src/init/proto.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^
$(BUILD)/fuzz/fuzz_size: fuzz/fuzz_size.c src/util/size.c src/util/util.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^
$(BUILD)/fuzz/fuzz_ws: fuzz/fuzz_ws.c src/server/ws.c src/util/util.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -lcrypto
# Routing and JSON bodies: routes.c's handlers are stubs in the fuzzer,
# generated from the prototypes in src/server/*.h (a new handler needs no edit).
$(BUILD)/fuzz/route_stubs.c: fuzz/gen_route_stubs.py src/server/routes.c $(wildcard src/server/*.h)
	@mkdir -p $(dir $@)
	python3 fuzz/gen_route_stubs.py src/server/routes.c $(wildcard src/server/*.h) > $@.tmp && mv $@.tmp $@
$(BUILD)/fuzz/fuzz_route: fuzz/fuzz_route.c $(BUILD)/fuzz/route_stubs.c src/server/router.c src/server/routes.c src/util/size.c src/util/util.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson
# The network policy: parsing and decisions on flows derived from the input.
$(BUILD)/fuzz/fuzz_policy: fuzz/fuzz_policy.c src/net/policy.c src/net/httppath.c src/util/util.c src/util/size.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson
# HTTP as the egress engine reads it from cells and upstreams: parser, checks, redaction.
$(BUILD)/fuzz/fuzz_http: fuzz/fuzz_http.c src/net/httpmsg.c src/net/httppath.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -lhttp_parser -lcrypto
# DNS: the cell's queries and, through a fake upstream in the fuzzer, the answers.
FUZZ_DNS_SRC := src/net/dns.c src/net/policy.c src/net/httppath.c $(wildcard src/net/screen.c) src/util/util.c src/util/size.c
$(BUILD)/fuzz/fuzz_dns: fuzz/fuzz_dns.c $(FUZZ_DNS_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -lldns -ljansson -lpthread
# The owner's checks of the egress helper's messages (src/net/sep_check.c).
$(BUILD)/fuzz/fuzz_sep: fuzz/fuzz_sep.c src/net/sep_check.c src/init/proto.c src/net/policy.c src/net/httppath.c src/util/util.c src/util/size.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson
# The CLI's HTTP/1.1 client reading a daemon's answers (src/cli/http1.c).
$(BUILD)/fuzz/fuzz_http1: fuzz/fuzz_http1.c src/cli/http1.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -lhttp_parser
# The egress meter reading model responses' usage (src/net/meter.c).
$(BUILD)/fuzz/fuzz_meter: fuzz/fuzz_meter.c src/net/meter.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -ljansson
# The live view's JPEG splitter: what a cell's frame source writes, cut into images.
$(BUILD)/fuzz/fuzz_jpegsplit: fuzz/fuzz_jpegsplit.c src/server/jpegsplit.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^
FUZZ_TARGETS := fuzz_proto fuzz_size fuzz_ws fuzz_route fuzz_policy fuzz_http fuzz_dns fuzz_sep fuzz_http1 fuzz_meter fuzz_jpegsplit
# A target with a committed seed corpus (fuzz/corpus/http for fuzz_http)
# starts from it, in a scratch copy so that runs never add files to the tree.
fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)
	@set -e; for f in $^; do n=$$(basename $$f); n=$${n#fuzz_}; echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  rm -rf $$f.corpus && mkdir -p $$f.corpus && if [ -d fuzz/corpus/$$n ]; then cp fuzz/corpus/$$n/* $$f.corpus/; fi; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=0 $$f.corpus 2>&1 | tail -2; done

deps:
	bash scripts/install-deps.sh

# make install / uninstall (scripts/install.sh, README "Install"): cell and
# cell-daemon, libcell (.so, .a, cell.h, libcell.pc), the man pages and
# shell completions `make docs` generates from $(BUILD)/cell's help text
# (scripts/gen-docs.py, so they cannot drift from the binary), the systemd
# unit, the example config and the state directory.  DESTDIR stages; only
# $(BUILD) is built (BUILD=build-x make install builds nothing in build/).
PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
LIBDIR         ?= $(PREFIX)/lib
INCLUDEDIR     ?= $(PREFIX)/include
DATADIR        ?= $(PREFIX)/share
MANDIR         ?= $(DATADIR)/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR     ?= /etc
STATEDIR       ?= /var/lib/cell
INSTALL_ENV     = BUILD='$(BUILD)' DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' BINDIR='$(BINDIR)' LIBDIR='$(LIBDIR)' \
                  INCLUDEDIR='$(INCLUDEDIR)' DATADIR='$(DATADIR)' MANDIR='$(MANDIR)' SYSCONFDIR='$(SYSCONFDIR)' \
                  SYSTEMDUNITDIR='$(SYSTEMDUNITDIR)' STATEDIR='$(STATEDIR)'
.PHONY: docs install uninstall
# docs also rewrites docs/cli.md, the command reference in the tree, when
# the help text changed (commit it; test_cli_docs.py compares); install
# only needs the man pages and completions.
docs: $(BUILD)/doc/.stamp
	$(PYTHON) scripts/gen-docs.py --markdown $(BUILD)/cell docs/cli.md
$(BUILD)/doc/.stamp: $(BUILD)/cell scripts/gen-docs.py
	rm -rf $(BUILD)/doc
	$(PYTHON) scripts/gen-docs.py $(BUILD)/cell $(BUILD)/doc
	touch $@
install: all $(BUILD)/doc/.stamp
	$(INSTALL_ENV) bash scripts/install.sh install
uninstall:
	$(INSTALL_ENV) bash scripts/install.sh uninstall

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
