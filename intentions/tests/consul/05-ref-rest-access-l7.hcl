# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "REST access".
#   Same HCL in website/content/docs/agent/config-entries/service-intentions.mdx
#   @ 7efcf2f3f133d63a7d6795cd4caebe0c3a13e9d3 ("REST Access", 1.9-era page) and connect/config-entries/service-intentions.mdx.
# EXPECTED (Consul): VALID, L7 (uses Permissions/HTTP). No source Action (must be omitted with Permissions).
#   Sources (precedence computed as for L4): admin-dashboard -> api : L7 : 9 ; report-generator -> api : L7 : 9
#   admin-dashboard: [allow PathPrefix "/v2" Methods GET,PUT,POST,DELETE,HEAD]
#   report-generator: [allow PathPrefix "/v2/widgets" Methods GET]
#   Requires destination protocol http/http2/grpc at enforcement time (service-defaults/proxy-defaults);
#   Validate() itself does not check protocol.
Kind = "service-intentions"
Name = "api"
Sources = [
  {
    Name = "admin-dashboard"
    Permissions = [
      {
        Action = "allow"
        HTTP {
          PathPrefix = "/v2"
          Methods    = ["GET", "PUT", "POST", "DELETE", "HEAD"]
        }
      }
    ]
  },
  {
    Name = "report-generator"
    Permissions = [
      {
        Action = "allow"
        HTTP {
          PathPrefix = "/v2/widgets"
          Methods    = ["GET"]
        }
      }
    ]
  }
  # NOTE: a default catch-all based on the default ACL policy will apply to
  # unmatched connections and requests. Typically this will be DENY.
]
