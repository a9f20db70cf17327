# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "L4 Intentions for specific sources and destinations".
#   Identical HCL also in website/content/docs/connect/intentions.mdx @ 00827ca55c5501eb59f175aff9954fa28854f5a2
#   ("Intention Basics") and in website/content/docs/connect/config-entries/service-intentions.mdx.
# EXPECTED (Consul): VALID, L4 only. Destination default/default/db (partition/namespace/name).
#   Rules (source -> destination, action, precedence); source ns/partition = destination's (default):
#     web -> db : deny  : 9
#     api -> db : allow : 9
#   Stored order after Normalize (stable sort by precedence desc): web, api (tie keeps file order).
Kind = "service-intentions"
Name = "db"
Sources = [
  {
    Name   = "web"
    Action = "deny"
  },
  {
    Name   = "api"
    Action = "allow"
  }
]
