# demo-1: the seed agent. It runs the "web" service, which may call "db" through its
# upstream listener on 127.0.0.1:19191. (@WORK@ and @KEY@ are filled in by run.sh.)
node_name = "demo-1"
data_dir  = "@WORK@/demo-1/data"
bind_addr = "127.0.0.1"

# Three agents share 127.0.0.1, so each gets its own ports.
ports {
  gossip = 17946   # UDP SWIM + TCP state sync
  data   = 17947   # QUIC between agents
  http   = 17948   # HTTP API for the CLI, loopback only
}

# Gossip is sealed with this AES-256-GCM key (from `rhizome keyring generate`).
encrypt = "@KEY@"

# Credentials from `rhizome ca issue-agent` (agent.pem, agent.key, bundle.pem).
ca {
  dir = "@WORK@/demo-1/ca"
}

# Fast failure detection for the demo (defaults follow Serf's LAN profile).
gossip {
  probe_interval = "500ms"
  probe_timeout  = "200ms"
  push_pull_interval = "5s"
}

service {
  name = "web"
  port = 18080                 # rhizome-testsvc http listens here
  check {
    tcp      = "127.0.0.1:18080"
    interval = "2s"
  }
  upstreams {
    destination_name = "db"    # web -> db: allowed by examples/intentions/db.hcl
    local_bind_port  = 19191
  }
}
