# rhizome: `make demo` (a running mesh you can watch) and `make test` (the whole suite).
# Needs only the Rust toolchain (cargo, rustfmt, clippy); each target says what else it checks.

CARGO ?= cargo
# Where cargo puts binaries (honours CARGO_TARGET_DIR like cargo itself).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: all build release test fmt-check clippy unit demo bench clean kube-apiserver image

all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p rhizome-agent --bin rhizome
	$(CARGO) build --release -p rhizome-integration --bin rhizome-testsvc

## test: formatting, lints (warnings are errors), then every test of every crate.
## Network-namespace tests need root and iproute2 (packet-loss tests also tc with sch_netem,
## or nft); without them each prints one "SKIPPED file:line: what is missing" line and passes.
test: fmt-check clippy unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

# --no-fail-fast: one failing test binary does not hide the others; the exit status still
# fails if any test failed.
unit:
	$(CARGO) test --workspace --all-features --no-fail-fast

## demo: builds rhizome (release), starts three agents and two services on 127.0.0.1,
## shows an allowed and a denied connection, members, catalog and graph, stops them all.
demo: release
	@bash examples/demo/run.sh $(TARGET_DIR)/release

## kube-apiserver: etcd and kube-apiserver (1.20, built from Debian's kubernetes source with
## Debian's Go) for the kube tests that run against a real API server; cached under
## $(TARGET_DIR)/kube, so a second run is instant. Needs root for apt (etcd-server, golang-go);
## without it those tests print one "SKIPPED ..." line and pass.
kube-apiserver:
	@CARGO_TARGET_DIR="$(TARGET_DIR)" bash integration/kube/obtain.sh

## image: the container image the Kubernetes DaemonSet names (Containerfile; podman or docker).
CONTAINER ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
image:
	@test -n "$(CONTAINER)" || { echo "make image: needs podman or docker" >&2; exit 1; }
	$(CONTAINER) build -f Containerfile -t rhizome:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1) .

clean:
	$(CARGO) clean
