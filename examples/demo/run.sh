#!/usr/bin/env bash
# make demo: a three-agent mesh on 127.0.0.1 that you can watch.
#
#   demo-1 runs "web"   (HTTP)      upstream db -> 127.0.0.1:19191
#   demo-2 runs "batch"             upstream db -> 127.0.0.1:19192
#   demo-3 runs "db"    (TCP echo)
#
# Intentions (examples/intentions/db.hcl): web -> db allowed, everything else -> db denied.
# The script makes a CA and a gossip key, starts the agents and the two services, applies
# the intentions, shows an allowed and a denied connection, the members, the catalog and the
# access graph, then stops everything it started (by PID).
#
# Usage: examples/demo/run.sh [BIN_DIR]   (BIN_DIR holds rhizome and rhizome-testsvc;
# default target/release). Needs nothing else.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/release}
RHIZOME="$bin/rhizome"
TESTSVC="$bin/rhizome-testsvc"
for b in "$RHIZOME" "$TESTSVC"; do
  [ -x "$b" ] || { echo "missing $b: run 'make demo' (it builds them)" >&2; exit 1; }
done

work=$(mktemp -d -t rhizome-demo-XXXXXX)
pids=()
cleanup() {
  local code=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ "$code" -ne 0 ]; then
    echo "demo failed (exit $code); agent logs:" >&2
    for n in 1 2 3; do echo "--- demo-$n" >&2; tail -n 30 "$work/demo-$n/agent.log" >&2 || true; done
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
api() { RHIZOME_HTTP_ADDR="127.0.0.1:$1" "$RHIZOME" "${@:2}"; }
wait_for() { # wait_for DESCRIPTION TRIES COMMAND...
  local what=$1 tries=$2; shift 2
  for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for: $what" >&2
  return 1
}

bold "1. a certificate authority and a gossip key"
"$RHIZOME" ca init --trust-domain demo.mesh --out "$work/root"
"$RHIZOME" ca issue-operator --ca-dir "$work/root" --name demo-operator --out "$work/operator"
key=$("$RHIZOME" keyring generate | tail -n 1)
for n in 1 2 3; do
  mkdir -p "$work/demo-$n/cfg"
  "$RHIZOME" ca issue-agent --ca-dir "$work/root" --node "demo-$n" --out "$work/demo-$n/ca" >/dev/null
  sed -e "s|@WORK@|$work|g" -e "s|@KEY@|$key|g" "$here/demo-$n.hcl" > "$work/demo-$n/cfg/agent.hcl"
done
echo "root, operator and three agent intermediates in $work"

bold "2. the services: web (HTTP on :18080) and db (TCP echo on :18090)"
"$TESTSVC" http --listen 127.0.0.1:18080 --body "hello from web" >"$work/web.log" 2>&1 &
pids+=($!)
"$TESTSVC" echo --listen 127.0.0.1:18090 >"$work/db.log" 2>&1 &
pids+=($!)

bold "3. three agents (demo-2 and demo-3 join demo-1 by gossip)"
for n in 1 2 3; do
  "$RHIZOME" agent --config-dir "$work/demo-$n/cfg" >"$work/demo-$n/agent.log" 2>&1 &
  pids+=($!)
  echo "demo-$n: pid $!, config $work/demo-$n/cfg/agent.hcl"
done
for port in 17948 27948 37948; do wait_for "agent API :$port" 100 api "$port" info; done
members_alive() { [ "$(api 17948 members --format json | grep -o '"alive"' | wc -l)" -eq 3 ]; }
wait_for "three alive members" 100 members_alive
api 17948 members

bold "4. the catalog (learned by gossip, signed by each agent)"
wait_for "db in demo-1's catalog" 100 api 17948 catalog service db
api 17948 catalog services
api 17948 catalog service db

bold "5. intentions: signed by the operator, replicated to every agent"
cat "$root/examples/intentions/db.hcl"
api 17948 intention apply "$root/examples/intentions/db.hcl" --operator-dir "$work/operator"
# The default policy is deny, so the rule is in force at demo-3 once web -> db is allowed there.
wait_for "the rule at demo-3" 100 api 37948 intention check web db
api 37948 intention check web db || true
api 37948 intention check batch db || true

bold "6. an allowed connection: web -> db through demo-1's upstream 127.0.0.1:19191"
"$TESTSVC" client --connect 127.0.0.1:19191 --bytes 65536 --timeout-ms 5000
echo "ALLOWED: 64 KiB echoed byte-exact through demo-1 -> QUIC+mTLS -> demo-3 -> db"

bold "7. a denied connection: batch -> db through demo-2's upstream 127.0.0.1:19192"
set +e
"$TESTSVC" client --connect 127.0.0.1:19192 --bytes 1024 --timeout-ms 3000
code=$?
set -e
if [ "$code" -eq 0 ]; then echo "expected batch -> db to be refused" >&2; exit 1; fi
echo "DENIED: batch -> db refused by demo-3's intentions (client exit $code, no data)"
echo "demo-3's access log:"; grep -h 'rhizome::access' "$work"/demo-3/agent.log | tail -n 2 || true

bold "8. the access graph (rhizome graph --format dot renders with graphviz)"
api 17948 graph --format json

bold "9. the web UI: every agent serves the whole mesh"
echo "open http://127.0.0.1:17948/ui/ (demo-1), http://127.0.0.1:27948/ui/ or http://127.0.0.1:37948/ui/"
if [ -t 0 ] && [ -t 1 ] && [ -z "${CI:-}" ]; then
  # Keep traffic flowing so the topology shows live rates while the mesh is watched.
  ( for _ in $(seq 1 600); do
      "$TESTSVC" client --connect 127.0.0.1:19191 --bytes 4096 --timeout-ms 2000 >/dev/null 2>&1 || true
      "$TESTSVC" client --connect 127.0.0.1:19192 --bytes 64 --timeout-ms 1000 >/dev/null 2>&1 || true
      sleep 1
    done ) &
  pids+=($!)
  read -r -p "the demo mesh keeps running: press Enter to stop it " _ || true
fi

bold "done: stopping everything the demo started"
