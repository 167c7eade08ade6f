# nuvol — build, boot and test. See README.md.
#
#   make qemu    build the image and the recipes, boot a copy in QEMU (out/qemu, keeps its state)
#   make community  boot a community of BOXES (4) boxes in two zones, one behind NAT
#                (qemu/community.sh; Ctrl-C stops it)
#   make qemu-reset  forget that box (the next `make qemu` starts from a fresh copy)
#   make image   out/nuvol-x86_64.img, ready to dd onto a USB stick
#                (ARCH=arm64: out/nuvol-arm64.img, ARCH=armv7: out/nuvol-armv7.img;
#                every target takes ARCH)
#   make update-artefact  out/nuvol-ARCH-VERSION.nvu: the image's OS as a signed update (dev key)
#   make test    every test (what .ci/run calls); sweeps as a seeded sample
#   make test-full  make test with the whole sweeps (40 update power cuts)
#   make bench   benchmarks, printed as ratios against their peers
#
# Slow artefacts (kernel build, cargo target dir) live under $(NUVOL_CACHE),
# outside the clone, keyed by content hash.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := image

NUVOL_CACHE ?= /var/cache/nuvol
export NUVOL_CACHE
export CARGO_TARGET_DIR ?= $(NUVOL_CACHE)/target
# Incremental state grew the cached target dir by ~9 GiB and buys little when
# every run builds a new commit; off unless the caller sets it.
export CARGO_INCREMENTAL ?= 0
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Seconds of fuzzing per target in make test (make test-full: 60): the
# committed corpus replayed and a few seconds beyond it.
FUZZ_SECS ?= 5

# ARCH=x86_64 (default) or arm64: the binary, kernel and image of that
# architecture (out/nuvol-ARCH.img). arm64: ring's C parts with Debian's
# aarch64 cross gcc, linked by rust-lld (self-contained musl); the kernel
# cross-built with the same gcc. ARCH=armv7 (32-bit ARM, hard float): the
# binary (see ARMV7 below), kernel, image, recipes (Debian's armhf packages)
# and OS update artefact, booted by `make qemu`.
ARCH ?= x86_64
export ARCH
# How any aarch64 build is made (the arm64 binary, its unit tests under
# qemu-user): ring's C parts with Debian's cross gcc, linked by rust-lld.
export CC_aarch64_unknown_linux_musl := aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_musl := aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER := rust-lld
ifeq ($(ARCH),x86_64)
TARGET := x86_64-unknown-linux-musl
KERNEL := out/bzImage
KERNEL_FRAGMENTS := kernel-config/common.config kernel-config/qemu.config kernel-config/x86.config kernel-config/atom.config
else ifeq ($(ARCH),arm64)
TARGET := aarch64-unknown-linux-musl
KERNEL := out/arm64/vmlinuz.efi
KERNEL_FRAGMENTS := kernel-config/common.config kernel-config/qemu.config kernel-config/arm64.config kernel-config/arm64-boards.config
else ifeq ($(ARCH),armv7)
TARGET := armv7-unknown-linux-musleabihf
KERNEL := out/armv7/zImage
KERNEL_FRAGMENTS := kernel-config/common.config kernel-config/qemu.config kernel-config/armv7.config kernel-config/armv7-boards.config
ifneq ($(filter community bench test test-full test-e2e,$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
$(error ARCH=armv7: nuvol, kernel, image, bundles, update-artefact and qemu; the test suite, benchmarks and the community run with ARCH=x86_64 and build the armv7 image themselves)
endif
else
$(error ARCH=$(ARCH): nuvol builds for ARCH=x86_64, arm64 or armv7)
endif
# cargo locks a target dir while it builds: armv7's (std built from source,
# see ARMV7 below) is a separate one, so it builds beside the others (nuvols).
ARCH_TARGET_DIR := $(CARGO_TARGET_DIR)$(if $(filter armv7,$(ARCH)),-armv7)
# Paths must not leak into the binary, or two clones would build different images.
RUSTFLAGS_IMAGE := --remap-path-prefix=$(CURDIR)=/nuvol --remap-path-prefix=$(HOME)/.cargo=/cargo \
	--remap-path-prefix=$(ARCH_TARGET_DIR)=/target
NUVOL_BIN := $(ARCH_TARGET_DIR)/$(TARGET)/release/nuvol
# out/nuvol is the x86_64 one (the image's); other architectures' carry the name.
BIN_SUFFIX := $(if $(filter x86_64,$(ARCH)),,-$(ARCH))
IMAGE := out/nuvol-$(ARCH).img
# A command to run the image step under, e.g. "faketime -f +2d" (the
# reproducibility test moves the clock to show it does not leak into images;
# it sets NO_FAKE_STAT=1 so files keep their real times, as on another day).
IMAGE_WRAPPER ?=
FIRMWARE ?= bios
PORT ?= 8080
HTTPS_PORT ?= 8443
# The `make qemu` box: a sparse copy of the image, as big as a USB stick.
DISK ?= 4G
QEMU_BOX := out/qemu$(BIN_SUFFIX)
# The recipes, built for ARCH; signed by a nuvol that runs on this host.
BUNDLES := out/bundles$(BIN_SUFFIX)
HOST_NUVOL := $(CARGO_TARGET_DIR)/x86_64-unknown-linux-musl/release/nuvol
# The architecture as nuvol names it (bundles, updates): Rust's name.
RUST_ARCH := $(if $(filter arm64,$(ARCH)),aarch64,$(if $(filter armv7,$(ARCH)),arm,x86_64))
# Host ports forwarded to the recipes' service ports (web, etcd client,
# Syncthing GUI): host:guest.
FORWARD ?= 18080:8080 12379:2379 18384:8384

UPDATE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
UPDATE_ARTEFACT := out/nuvol-$(ARCH)-$(UPDATE_VERSION).nvu

.PHONY: update-artefact deps deps-lint deps-test nuvol kernel image qemu community qemu-reset test test-full test-unit test-unit-arm64 test-unit-armv7 test-unit-armv7-run test-e2e fuzz-short lint nuvols size size-arm bench bundles clean

deps:
	@image/deps.sh build

deps-lint:
	@image/deps.sh lint

deps-test:
	@image/deps.sh test

# ARMV7: rustup has no rust-std for armv7-unknown-linux-musleabihf at the
# pinned toolchain (404), so std is built from rust-src (-Zbuild-std, which
# needs RUSTC_BOOTSTRAP=1 on a stable toolchain) with the release profile,
# LTO included. image/armv7-sysroot.sh supplies musl 1.2.3 (Debian's armhf
# build), crt objects and LLVM's libunwind; ring's C parts are compiled
# by Debian's armhf cross gcc against musl's headers; rust-lld links a
# static, non-PIE executable (the target has no static-pie).
# 64-bit time: musl 1.2 has 64-bit time_t on 32-bit ARM and keeps the old
# 32-bit ABI under the plain symbol names (clock_gettime, stat, ...), the
# 64-bit one under __*_time64. `--cfg libc_unstable_musl_v1_2` makes the libc
# crate of the workspace take 64-bit time_t and those __*_time64 symbols.
# std's own libc (0.2.178, pinned by rust-src's Cargo.lock) has no 64-bit
# time for 32-bit musl: std keeps 32-bit time_t and the plain symbols, which
# agree with each other, as in Rust's prebuilt armv7 musl std (SystemTime
# and file times through std end in 2038; through libc they do not).
ifeq ($(ARCH),armv7)
ARMV7_ENV = sysroot=$$(image/armv7-sysroot.sh) && \
	RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(ARCH_TARGET_DIR) \
	CC_armv7_unknown_linux_musleabihf=arm-linux-gnueabihf-gcc \
	AR_armv7_unknown_linux_musleabihf=arm-linux-gnueabihf-ar \
	CFLAGS_armv7_unknown_linux_musleabihf="-nostdinc -isystem $$sysroot/include -isystem $$(arm-linux-gnueabihf-gcc -print-file-name=include)" \
	CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER=rust-lld
ARMV7_RUSTFLAGS = -L native=$$sysroot/lib --cfg libc_unstable_musl_v1_2
NUVOL_BUILD = $(ARMV7_ENV) \
	RUSTFLAGS="$(RUSTFLAGS_IMAGE) --remap-path-prefix=$$(rustc --print sysroot)/lib/rustlib/src/rust=/rustc/$$(rustc -vV | sed -n 's/^commit-hash: //p') \
		$(ARMV7_RUSTFLAGS)" \
	cargo build -Zbuild-std=std
else
NUVOL_BUILD = RUSTFLAGS="$(RUSTFLAGS_IMAGE)" cargo build
endif

nuvol: deps
	$(NUVOL_BUILD) --release --locked --target $(TARGET) -p nuvol
	@file $(NUVOL_BIN) | grep -q 'static' || { echo "nuvol is not a static binary" >&2; exit 1; }
	@mkdir -p out && install -m 0755 $(NUVOL_BIN) out/nuvol$(BIN_SUFFIX).tmp && mv out/nuvol$(BIN_SUFFIX).tmp out/nuvol$(BIN_SUFFIX)

kernel: deps
	image/kernel.sh $(ARCH) $(KERNEL) $(KERNEL_FRAGMENTS)

image: nuvol kernel
	$(IMAGE_WRAPPER) image/build.sh $(ARCH) $(NUVOL_BIN) $(KERNEL) $(IMAGE)

# The image's kernel and initramfs as a signed OS update (docs/boot.md,
# "Update"), signed with the development key `make bundles` uses. Same
# inputs, same bytes (ed25519 signatures are deterministic).
update-artefact: image
	@[ "$(ARCH)" = x86_64 ] || $(MAKE) --no-print-directory nuvol ARCH=x86_64
	@test -f $(NUVOL_CACHE)/dev-key/dev.sec || $(HOST_NUVOL) bundle keygen -o $(NUVOL_CACHE)/dev-key/dev \
		-c "DEVELOPMENT ONLY nuvol recipes key, never trust in production"
	$(HOST_NUVOL) update build --kernel $(KERNEL) --initrd $(dir $(KERNEL))initrd.img --version $(UPDATE_VERSION) \
		--arch $(RUST_ARCH) -k $(NUVOL_CACHE)/dev-key/dev.sec -o $(UPDATE_ARTEFACT)
	$(HOST_NUVOL) update verify $(UPDATE_ARTEFACT) --arch $(RUST_ARCH) -p $(NUVOL_CACHE)/dev-key/dev.pub

qemu: image bundles
	qemu/box.sh --dir $(QEMU_BOX) --disk $(DISK) --nuvol $(HOST_NUVOL) --bundles $(BUNDLES) \
		--firmware $(FIRMWARE) --port $(PORT) --https-port $(HTTPS_PORT) \
		$(foreach f,$(FORWARD),--forward $(f)) $(IMAGE)

BOXES ?= 4
community: image bundles
	qemu/community.sh up --boxes $(BOXES) --bundles out/bundles $(IMAGE)

qemu-reset:
	rm -rf $(QEMU_BOX)
	@echo "the next 'make qemu' boots a fresh copy of $(IMAGE)"

lint: deps-lint
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	# That the crates build for each box's target (musl, and 32 bits on
	# armv7: c_ulong, usize, time_t) is shown by building them: make nuvols.

test-unit: deps-test
	cargo test --workspace --exclude nuvol-e2e --locked

# The suite boots copies only: the release images must come out unchanged.
# The arm64 and armv7 images and recipes are built too (tests/tests/arm64.rs,
# armv7.rs). Boxes boot in parallel lanes, one per core (tests/e2e-lanes.sh;
# E2E="update rescue" runs only those, NUVOL_E2E_LANES=1 one at a time).
test-e2e: deps-test image bundles
	$(MAKE) --no-print-directory image bundles ARCH=arm64
	$(MAKE) --no-print-directory image bundles ARCH=armv7
	@sha256sum $(IMAGE) out/nuvol-arm64.img out/nuvol-armv7.img > out/image.sha256
	NUVOL_IMAGE=$(CURDIR)/$(IMAGE) NUVOL_BIN=$(NUVOL_BIN) NUVOL_BUNDLES=$(CURDIR)/out/bundles \
		NUVOL_IMAGE_ARM64=$(CURDIR)/out/nuvol-arm64.img NUVOL_BUNDLES_ARM64=$(CURDIR)/out/bundles-arm64 \
		NUVOL_IMAGE_ARMV7=$(CURDIR)/out/nuvol-armv7.img NUVOL_BUNDLES_ARMV7=$(CURDIR)/out/bundles-armv7 \
		tests/e2e-lanes.sh $(E2E)
	@sha256sum --quiet -c out/image.sha256 || { echo "FAIL: the boots of the suite changed a release image" >&2; exit 1; }
	@echo "release images unchanged after the suite's boots: $$(cut -c1-16 out/image.sha256 | tr "\n" " ")"

# The product's budget: the static nuvol with every feature <= 8 MiB.
size: nuvol
	tests/bench/size.sh $(NUVOL_BIN)

# Every architecture's nuvol at once: x86_64 and arm64 in one cargo run (two
# --target), armv7 beside it in its own target dir (its log in
# out/nuvol-armv7.log). A release build ends in link-time optimisation on one
# core: built together, they keep both cores busy. Then `make nuvol` per
# architecture finds them built, installs and checks them.
nuvols:
	@image/deps.sh build && ARCH=arm64 image/deps.sh build && ARCH=armv7 image/deps.sh build
	@mkdir -p out; $(MAKE) --no-print-directory nuvol ARCH=armv7 > out/nuvol-armv7.log 2>&1 & armv7=$$!; \
		$(NUVOL_BUILD) --release --locked --target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl -p nuvol \
			|| { wait $$armv7 || true; exit 1; }; \
		wait $$armv7 || { cat out/nuvol-armv7.log; echo "FAIL: building the armv7 nuvol" >&2; exit 1; }; \
		tail -n 2 out/nuvol-armv7.log
	$(MAKE) --no-print-directory nuvol
	$(MAKE) --no-print-directory nuvol ARCH=arm64

# The ARM binaries: within the same budget, and they run (qemu-user).
size-arm: nuvols
	$(MAKE) --no-print-directory size ARCH=arm64
	$(MAKE) --no-print-directory size ARCH=armv7
	tests/arm-smoke.sh arm64 out/nuvol-arm64 $(NUVOL_BIN)
	tests/arm-smoke.sh armv7 out/nuvol-armv7 $(NUVOL_BIN)

# The crates whose unit tests also run for aarch64, under qemu-user
# (tests/README.md says why not the others).
ARM64_USER_CRATES := nuvol-bundle nuvol-catalog nuvol-config nuvol-disk nuvol-durable \
	nuvol-gossip nuvol-human nuvol-init nuvol-mdns nuvol-net nuvol-rawnl nuvol-reset \
	nuvol-status nuvol-supervisor nuvol-testkit nuvol-update
test-unit-arm64: deps-test
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static \
		cargo test --locked --target aarch64-unknown-linux-musl $(ARM64_USER_CRATES:%=-p %) --lib

# The same crates for armv7 under qemu-arm-static (std built from source, as
# for the armv7 nuvol): make test-full only, the debug std and crates take
# a few minutes to build.
test-unit-armv7:
	$(MAKE) --no-print-directory deps ARCH=armv7
	$(MAKE) --no-print-directory test-unit-armv7-run ARCH=armv7
ifeq ($(ARCH),armv7)
test-unit-armv7-run:
	$(ARMV7_ENV) CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUNNER=qemu-arm-static \
		RUSTFLAGS="$(ARMV7_RUSTFLAGS)" \
		cargo test -Zbuild-std=std --locked --target $(TARGET) $(ARM64_USER_CRATES:%=-p %) --lib
endif

test: lint nuvols size size-arm test-unit test-unit-arm64 test-e2e fuzz-short

# The same with the whole sweeps: OS-update power cuts at 40 points, 20 per
# loader (make test cuts at 3, seeded and printed; NUVOL_SEED replays), the
# ARM images' reproducibility too (make test: x86_64 only), fuzzing 60 s
# per target (make test: 5 s); and the agent crates' unit tests for armv7.
test-full:
	$(MAKE) --no-print-directory test NUVOL_POWERCUT_POINTS=40 \
		NUVOL_REPRO_ARCHES="x86_64 arm64 armv7" NUVOL_REPRO_BUILD=all FUZZ_SECS=60
	$(MAKE) --no-print-directory test-unit-armv7

bundles: deps nuvol
	@[ "$(ARCH)" = x86_64 ] || $(MAKE) --no-print-directory nuvol ARCH=x86_64
	BUNDLE_ARCH=$(RUST_ARCH) NUVOL=$(HOST_NUVOL) recipes/build-all.sh $(BUNDLES)

fuzz-short: deps-test
	FUZZ_TARGET_DIR=$(NUVOL_CACHE)/fuzz-target fuzz/run-short.sh $(FUZZ_SECS)

bench: deps-test image bundles
	$(MAKE) --no-print-directory image ARCH=arm64
	$(MAKE) --no-print-directory image ARCH=armv7
	NUVOL_BENCH_SYNCTHING=$(CURDIR)/out/bundles/syncthing.nvb cargo bench --workspace --locked
	NUVOL_IMAGE=$(CURDIR)/$(IMAGE) tests/bench/boot.sh
	# The panel bench on this host, then on the booted box beside it.
	tests/bench/box.sh $(IMAGE) $(NUVOL_BIN) out/bundles
	# The agent under attack: status and gossip RTT beside the quiet figures.
	tests/bench/attack.sh $(NUVOL_BIN)
	# OS updates: artefact size, apply time, trial boot beside a plain reboot.
	tests/bench/update.sh $(IMAGE) $(NUVOL_BIN)
	# The community: 4 boxes in two zones (overlay mesh, throughput, traffic,
	# etcd write latency across three boxes), then gossip traffic at 50
	# agents in a network namespace.
	BUNDLES=$(BUNDLES) tests/bench/community.sh $(IMAGE)
	tests/bench/gossip-n.sh $(NUVOL_BIN) 50

clean:
	rm -rf out
