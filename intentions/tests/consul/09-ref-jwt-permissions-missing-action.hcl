# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "JWT validation with intentions" (HCL tab).
#   Same HCL in website/content/docs/connect/config-entries/service-intentions.mdx @ 7ea48caf8128861a5037c5902146ec22bd98f477.
# EXPECTED (Consul): decodes fine (HTTP = {...}, JWT = {...} are single objects), but INVALID in Validate():
#   Permissions[0] has no Action ->
#   "Sources[0].Permissions[0].Action must be set to 'allow' or 'deny'"
#   (agent/structs/config_entry_intentions.go validate(); the test case "permission action must be set" in
#   config_entry_intentions_test.go asserts exactly this). Uses L7 + per-permission JWT.
Kind = "service-intentions"
Name = "backend"
Sources = [
  {
    Name = "frontend"
    Permissions = [
      {
        HTTP = {
          PathExact = "/admin"
        }
        JWT = {
          Providers = [
            {
              Name = "okta"
              VerifyClaims = [
                {
                  Path = ["perms", "role"]
                  Value = "admin"
                }
              ]
            }
          ]
        }
      },
      {
        Action = "allow"
        HTTP = {
          PathPrefix = "/"
        }
      }
    ]
  }
]
