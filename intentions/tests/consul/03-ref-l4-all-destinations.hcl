# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "L4 intentions for all destinations".
#   Identical HCL in website/content/docs/connect/intentions.mdx @ 00827ca55c5501eb59f175aff9954fa28854f5a2
#   ("Wildcard Intentions", first block).
# EXPECTED (Consul): VALID, L4. Destination name wildcard "*" in namespace default.
#   Rules:
#     web -> * : deny : 6   (dest exact-count 1 -> max 6; src exact-count 2 -> 6 - (2-2) = 6)
Kind = "service-intentions"
Name = "*"
Sources = [
  {
    Name   = "web"
    Action = "deny"
  }
]
