#!/usr/bin/env bash
# Obtain a real Kubernetes control plane for the kube tests: etcd (Debian's etcd-server) and
# kube-apiserver built from Debian's Kubernetes source package with Debian's Go toolchain.
# Nothing is downloaded from outside the Debian archive. The result is cached under
# $CARGO_TARGET_DIR/kube (default target/kube); a second run only checks the cache.
#
#   integration/kube/obtain.sh          # or: make kube-apiserver
#
# Prints one line saying what it did. The tests find the binaries through the file
# <target>/kube/env (KUBE_APISERVER=..., ETCD=...), or KUBE_APISERVER / ETCD in the environment.
#
# Installing packages and enabling deb-src needs root; without root the script says which
# packages are missing and stops (the tests then skip with one line).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out="$target/kube"
bin="$out/bin/kube-apiserver"
envfile="$out/env"
started=$(date +%s)

etcd_bin() { command -v etcd 2>/dev/null || { [ -x /usr/bin/etcd ] && echo /usr/bin/etcd; } || true; }

if [ -x "$bin" ] && [ -n "$(etcd_bin)" ] && [ -f "$envfile" ]; then
  echo "kube: cached $("$bin" --version 2>/dev/null) at $bin, etcd $(etcd_bin) (nothing to do)"
  exit 0
fi

pkgs=(etcd-server golang-go golang-github-modern-go-reflect2-dev dpkg-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "$(id -u)" != 0 ] && { [ "${#missing[@]}" -gt 0 ] || ! apt-get source --print-uris kubernetes >/dev/null 2>&1; }; then
  echo "kube: not root; cannot install ${missing[*]:-} or fetch the kubernetes source (run as root: make kube-apiserver)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# apt-get source needs deb-src entries for the release's own suites.
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
srcfile=/etc/apt/sources.list.d/rhizome-deb-src.sources
if [ "$(id -u)" = 0 ] && ! apt-get source --print-uris kubernetes >/dev/null 2>&1; then
  cat >"$srcfile" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
elif [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The source package (about 30 MB) is kept in $out/dl; it is unpacked afresh in $out/src.
dl="$out/dl" src="$out/src"
mkdir -p "$dl" "$out/bin"
if ! ls "$dl"/kubernetes_*.dsc >/dev/null 2>&1; then
  (cd "$dl" && apt-get source -qq --download-only kubernetes >"$out/apt-source.log" 2>&1) \
    || { cat "$out/apt-source.log" >&2; echo "kube: apt-get source kubernetes failed" >&2; exit 1; }
fi
rm -rf "$src"
mkdir -p "$src"
# (apt verified the files against the signed Sources index; no keyring needed here)
dpkg-source --no-check -x "$(ls "$dl"/kubernetes_*.dsc | head -n1)" "$src/k8s" >/dev/null
k8s="$src/k8s"
[ -d "$k8s/cmd/kube-apiserver" ] || { echo "kube: no cmd/kube-apiserver in the kubernetes source at $k8s" >&2; exit 1; }

# The vendored reflect2 1.0.1 crashes at start-up on Go >= 1.18; Debian's 1.0.2 does not.
r2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$r2" ] || { echo "kube: $r2 missing (package golang-github-modern-go-reflect2-dev)" >&2; exit 1; }
rm -rf "$k8s/vendor/github.com/modern-go/reflect2"
mkdir -p "$k8s/vendor/github.com/modern-go/reflect2"
cp -r "$r2"/. "$k8s/vendor/github.com/modern-go/reflect2/"
find "$k8s/vendor/github.com/modern-go/reflect2" -name '*_test.go' -delete

# Version stamped the way the upstream build does (the Debian version's upstream part).
# Debian's version of 1.20.2 is 1.20.5+really1.20.2-1.1+deb12u1: the upstream part after "really".
ver="$(cd "$k8s" && dpkg-parsechangelog -S Version 2>/dev/null | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/.*+really//' -e 's/+.*//')"
[ -n "$ver" ] || ver=1.20.0
major="${ver%%.*}"; minor="${ver#*.}"; minor="${minor%%.*}"
ldflags="-s -w"
# (in GOPATH mode the vendored packages' import paths start with k8s.io/kubernetes/vendor/)
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

# Kubernetes 1.20 builds in GOPATH mode (its hack/lib/init.sh sets GO111MODULE=off): the
# source sits at $GOPATH/src/k8s.io/kubernetes, vendor/ (staging repos are symlinks there)
# provides every dependency. Only kube-apiserver: no tests, no race detector.
gopath="$src/gopath"
mkdir -p "$gopath/src/k8s.io"
ln -sfn "$k8s" "$gopath/src/k8s.io/kubernetes"
export GOPATH="$gopath" GOCACHE="$out/gocache" GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0
cd "$gopath/src/k8s.io/kubernetes"

# The OpenAPI definitions are generated by upstream's `make` (Makefile.generated_files), not
# shipped: run openapi-gen over the packages tagged +k8s:openapi-gen, found as that makefile
# finds them. kube-scheduler's config types are left out: 1.20's openapi-gen cannot type
# their time.Duration under Go >= 1.18, and kube-apiserver does not serve them.
go build -trimpath -o "$out/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
dirs="$(find -H . -not \( \( -path './_*' -o -path './.*' -o -path ./vendor -o -path ./debian \) -prune \) \
    -type f -name '*.go' | xargs grep -l '^// *+k8s:openapi-gen=' \
  | sed -e 's|/[^/]*$||' -e 's|^\./||' -e 's|^staging/src/|vendor/|' \
  | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' -e '^vendor/k8s.io/kube-scheduler/' \
  | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)"
"$out/openapi-gen" -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$src/openapi-violations.report" 2>"$src/openapi-gen.log" \
  || { tail -n 20 "$src/openapi-gen.log" >&2; echo "kube: openapi-gen failed" >&2; exit 1; }

go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" ./cmd/kube-apiserver
mv "$bin.tmp" "$bin"

printf 'KUBE_APISERVER=%s\nETCD=%s\n' "$bin" "$(etcd_bin)" >"$envfile"
# The unpacked source and the Go build cache are only needed to build; drop them (~2 GB).
rm -rf "$src" "$out/gocache" "$out/openapi-gen"
echo "kube: built $("$bin" --version) from Debian's kubernetes source with $(go version | cut -d' ' -f3) in $(( $(date +%s) - started ))s at $bin; etcd $("$(etcd_bin)" --version 2>/dev/null | head -n1)"
