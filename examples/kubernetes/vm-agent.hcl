# A rhizome agent on a VM joining the same mesh as the Kubernetes DaemonSet: it lists some
# Kubernetes node addresses (where the agents gossip on 7946 with host networking) in
# retry_join, and uses the same gossip key and trust bundle.
node_name      = "vm-billing-1"
data_dir       = "/var/lib/rhizome"
bind_addr      = "0.0.0.0"
advertise_addr = "10.0.1.20"
retry_join     = ["10.0.0.11:7946", "10.0.0.12:7946"]
encrypt        = "REPLACE-with-the-gossip-key-of-the-secret"
# The intention files of intentions_dir are signed with the operator credential of
# operator_dir (`rhizome ca issue-operator --out /etc/rhizome/operator`: chain.pem, key.pem);
# without it the agent cannot sign them, logs an ERROR and enforces default deny.
intentions_dir = "/etc/rhizome/intentions"
operator_dir   = "/etc/rhizome/operator"

ca {
  dir = "/etc/rhizome/ca"        # from `rhizome ca issue-agent` (or a join_token)
}

service {
  name = "db"
  namespace = "shop"
  port = 5432

  check {
    tcp      = "127.0.0.1:5432"
    interval = "10s"
  }
}
