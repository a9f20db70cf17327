# PROVENANCE: hashicorp/consul website/content/docs/multi-tenant/sameness-group/vm.mdx
#   @ 422b8b63c17e831be23ee2bff4f0a9d926f01383, "Create service intentions to authorize traffic between group members",
#   tab dc1-partition-1 (tabs dc1-partition-2 / dc2-partition-1 differ only in Partition = "partition-2"/"partition-1").
# EXPECTED (Consul Enterprise): VALID. Uses Namespace, Partition, SamenessGroup.
#   api (ns "store", sameness-group "product-group") -> partition-1/store/api-intentions : allow : 9
#   (Name "api-intentions" is literally the DESTINATION service name.) SamenessGroup sources skip MergeNoWildcard;
#   only NormalizeNamespace() applies; Partition must be empty when SamenessGroup is set.
# EXPECTED (Consul CE): INVALID. CLI decode succeeds (api struct has Namespace/Partition), but the server's
#   structs.DecodeConfigEntry (CE acl.EnterpriseMeta is an empty struct) reports unused keys via
#   validateUnusedKeys (agent/structs/config_entry_ce.go):
#     invalid config key "Namespace", namespaces are a consul enterprise feature
#     invalid config key "Partition"
#     invalid config key "Sources[0].Namespace", namespaces are a consul enterprise feature
#   (HTTP 400 "Request decoding failed: ..."). Had it decoded, CE validateSamenessGroup() would give
#   "Sources[0].SamenessGroup: Sameness groups are a Consul Enterprise feature. " (note trailing space).
Kind      = "service-intentions"
Name      = "api-intentions"
Namespace = "store"
Partition = "partition-1"
Sources   = [
  {
    Name          = "api"
    Action        = "allow"
    Namespace     = "store"
    SamenessGroup = "product-group"
  }
]
