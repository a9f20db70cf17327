# demo-3: runs "db", a TCP echo server. Inbound connections from other agents arrive over
# QUIC with mutual TLS; demo-3 checks the intentions and then connects to 127.0.0.1:18090.
node_name  = "demo-3"
data_dir   = "@WORK@/demo-3/data"
bind_addr  = "127.0.0.1"
retry_join = ["127.0.0.1:17946"]

ports {
  gossip = 37946
  data   = 37947
  http   = 37948
}

encrypt = "@KEY@"

ca {
  dir = "@WORK@/demo-3/ca"
}

gossip {
  probe_interval = "500ms"
  probe_timeout  = "200ms"
  push_pull_interval = "5s"
}

service {
  name = "db"
  port = 18090                 # rhizome-testsvc echo listens here
  check {
    tcp      = "127.0.0.1:18090"
    interval = "2s"
  }
}
