#!/usr/bin/env bash
# make demo: start a rhizome agent on 127.0.0.1, show what it knows, stop it.
# Needs only the rhizome binary built by `make release` (passed as $1).
set -euo pipefail
RHIZOME=${1:-target/release/rhizome}
HTTP=127.0.0.1:17948
export RHIZOME_HTTP_ADDR=$HTTP
work=$(mktemp -d -t rhizome-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "rhizome ca init + ca issue-agent (the mesh's root, demo-1's intermediate)"
"$RHIZOME" ca init --trust-domain demo.rhizome --out "$work/ca"
"$RHIZOME" ca issue-agent --ca-dir "$work/ca" --node demo-1 --out "$work/demo-1-ca"

mkdir -p "$work/cfg"
cat > "$work/cfg/agent.hcl" <<HCL
node_name = "demo-1"
data_dir  = "$work/data"
bind_addr = "127.0.0.1"
ports {
  gossip = 17946
  data   = 17947
  http   = 17948
}
ca {
  dir = "$work/demo-1-ca"
}
service {
  name = "web"
  port = 18080
  upstreams {
    destination_name = "db"
    local_bind_port  = 19191
  }
}
HCL

step "starting agent demo-1 (config: $work/cfg/agent.hcl)"
"$RHIZOME" agent --config-dir "$work/cfg" >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  "$RHIZOME" info >/dev/null 2>&1 && break
  sleep 0.1
done

step "rhizome info"
"$RHIZOME" info
step "rhizome services"
"$RHIZOME" services
step "rhizome ca status"
"$RHIZOME" ca status
step "agent log"
cat "$work/agent.log"
step "done: stopping the agent"
