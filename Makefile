# nuvol — build, boot and test. See README.md.
#
#   make qemu    build the x86_64 image and boot it in QEMU (serial console here)
#   make image   out/nuvol-x86_64.img, ready to dd onto a USB stick
#   make test    every test (what .ci/run calls)
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

TARGET := x86_64-unknown-linux-musl
# Paths must not leak into the binary, or two clones would build different images.
RUSTFLAGS_IMAGE := --remap-path-prefix=$(CURDIR)=/nuvol --remap-path-prefix=$(HOME)/.cargo=/cargo \
	--remap-path-prefix=$(CARGO_TARGET_DIR)=/target
NUVOL_BIN := $(CARGO_TARGET_DIR)/$(TARGET)/release/nuvol
KERNEL_FRAGMENTS := kernel-config/common.config kernel-config/qemu.config kernel-config/atom.config
IMAGE := out/nuvol-x86_64.img
# A command to run the image step under, e.g. "faketime -f +2d" (the
# reproducibility test moves the clock to show it does not leak into images;
# it sets NO_FAKE_STAT=1 so files keep their real times, as on another day).
IMAGE_WRAPPER ?=
FIRMWARE ?= bios
PORT ?= 8080
HTTPS_PORT ?= 8443

.PHONY: deps deps-test nuvol kernel image qemu test test-unit test-e2e fuzz-short lint bench bundles clean

deps:
	@image/deps.sh build

deps-test:
	@image/deps.sh test

nuvol: deps
	RUSTFLAGS="$(RUSTFLAGS_IMAGE)" cargo build --release --locked --target $(TARGET) -p nuvol
	@file $(NUVOL_BIN) | grep -q 'static' || { echo "nuvol is not a static binary" >&2; exit 1; }

kernel: deps
	image/kernel.sh out/bzImage $(KERNEL_FRAGMENTS)

image: nuvol kernel
	$(IMAGE_WRAPPER) image/build.sh $(NUVOL_BIN) out/bzImage $(IMAGE)

qemu: image
	qemu/run.sh --firmware $(FIRMWARE) --port $(PORT) --https-port $(HTTPS_PORT) $(IMAGE)

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	# Every library must build for the box's target (musl types differ: ioctl numbers, ...).
	cargo check --workspace --exclude nuvol-e2e --lib --bins --locked --target $(TARGET)

test-unit: deps-test
	cargo test --workspace --exclude nuvol-e2e --locked

test-e2e: deps-test image
	NUVOL_IMAGE=$(CURDIR)/$(IMAGE) NUVOL_BIN=$(NUVOL_BIN) cargo test -p nuvol-e2e --locked -- --test-threads=1

test: lint test-unit test-e2e fuzz-short

bundles: deps-test nuvol
	NUVOL=$(NUVOL_BIN) recipes/build-all.sh out/bundles

fuzz-short: deps-test
	FUZZ_TARGET_DIR=$(NUVOL_CACHE)/fuzz-target fuzz/run-short.sh

bench: deps-test image bundles
	NUVOL_BENCH_SYNCTHING=$(CURDIR)/out/bundles/syncthing.nvb cargo bench --workspace --locked
	NUVOL_IMAGE=$(CURDIR)/$(IMAGE) tests/bench/boot.sh
	tests/bench/panel.sh $(NUVOL_BIN)

clean:
	rm -rf out
