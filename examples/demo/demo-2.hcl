# demo-2: runs "batch", which also has an upstream to "db" (127.0.0.1:19192), but the
# intentions do not allow batch -> db: its connections are refused at demo-3.
node_name  = "demo-2"
data_dir   = "@WORK@/demo-2/data"
bind_addr  = "127.0.0.1"
retry_join = ["127.0.0.1:17946"]   # demo-1's gossip address

ports {
  gossip = 27946
  data   = 27947
  http   = 27948
}

encrypt = "@KEY@"

ca {
  dir = "@WORK@/demo-2/ca"
}

gossip {
  probe_interval = "500ms"
  probe_timeout  = "200ms"
  push_pull_interval = "5s"
}

service {
  name = "batch"
  port = 28080
  upstreams {
    destination_name = "db"
    local_bind_port  = 19192
  }
}
