# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "L4 intentions for all sources".
#   Identical HCL in website/content/docs/connect/intentions.mdx @ 00827ca55c5501eb59f175aff9954fa28854f5a2
#   ("Wildcard Intentions", second block).
# EXPECTED (Consul): VALID, L4.
#   Rules:
#     * -> db : deny : 8   (dest exact-count 2 -> max 9; src "*" in exact ns -> count 1 -> 9 - 1 = 8)
Kind = "service-intentions"
Name = "db"
Sources = [
  {
    Name   = "*"
    Action = "deny"
  }
]
