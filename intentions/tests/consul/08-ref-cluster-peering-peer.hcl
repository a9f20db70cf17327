# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "Cluster peering" (HCL tab; indented 2 spaces in the docs).
# EXPECTED (Consul): VALID (CE and Enterprise; peering is not Enterprise-only). Uses Peer.
#   frontend-service (peer "cluster-02") -> backend-service : allow : 9
#   Peer sources do NOT inherit the destination partition/namespace via MergeNoWildcard; Normalize only calls
#   src.EnterpriseMeta.NormalizeNamespace() for them. Precedence ignores Peer.
#   (The YAML tab of this docs example describes a different entry: backend, "*" deny + frontend peer cluster-01.)
  Kind      = "service-intentions"
  Name      = "backend-service"

  Sources = [
    {
      Name   = "frontend-service"
      Peer   = "cluster-02"
      Action = "allow"
    }
  ]
