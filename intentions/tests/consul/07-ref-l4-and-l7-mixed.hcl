# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "L4 and L7".
#   Same HCL in website/content/docs/agent/config-entries/service-intentions.mdx @ 7efcf2f3 (comment says "NOTE: ...").
# EXPECTED (Consul): VALID. Note the trailing comma after the last list element (legal in HCL1).
#   hackathon-project -> api : deny  : 9   (L4)
#   web               -> api : allow : 9   (L4)
#   nightly-reconciler-> api : L7    : 9   permissions: [allow PathExact "/v1/reconcile-data" Methods POST]
Kind = "service-intentions"
Name = "api"
Sources = [
  {
    Name   = "hackathon-project"
    Action = "deny"
  },
  {
    Name   = "web"
    Action = "allow"
  },
  {
    Name = "nightly-reconciler"
    Permissions = [
      {
        Action = "allow"
        HTTP {
          PathExact = "/v1/reconcile-data"
          Methods   = ["POST"]
        }
      }
    ]
  },
  # A default catch-all based on the default ACL policy applies to
  # unmatched connections and requests. This is typically DENY.
]
