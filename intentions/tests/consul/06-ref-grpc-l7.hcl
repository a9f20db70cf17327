# PROVENANCE: hashicorp/consul website/content/docs/reference/config-entry/service-intentions.mdx
#   @ 26eb0a8e017256b116af0b3c0b2302f529fc156f, example "gRPC".
#   Same HCL (trailing comment text "NOTE: a default catch-all ... will apply") in
#   website/content/docs/agent/config-entries/service-intentions.mdx @ 7efcf2f3f133d63a7d6795cd4caebe0c3a13e9d3.
# EXPECTED (Consul): VALID, L7.
#   frontend-web -> billing : L7 : 9  permissions in order:
#       [deny PathExact "/mycompany.BillingService/IssueRefund", allow PathPrefix "/mycompany.BillingService/"]
#   support-portal -> billing : L7 : 9  permissions: [allow PathPrefix "/mycompany.BillingService/"]
#   (Note: the YAML tab of the same docs example names the second source "support-protocol" - docs inconsistency.)
Kind = "service-intentions"
Name = "billing"
Sources = [
  {
    Name = "frontend-web"
    Permissions = [
      # The frontend website can execute all billing service methods except
      # issuing refunds.
      {
        Action = "deny"
        HTTP {
          PathExact = "/mycompany.BillingService/IssueRefund"
        }
      },
      {
        Action = "allow"
        HTTP {
          PathPrefix = "/mycompany.BillingService/"
        }
      }
    ]
  },
  {
    Name = "support-portal"
    Permissions = [
      # But the support team portal page can execute all methods.
      {
        Action = "allow"
        HTTP {
          PathPrefix = "/mycompany.BillingService/"
        }
      }
    ]
  }
  # A default catch-all based on the default ACL policy applies to
  # unmatched connections and requests. This is typically DENY.
]
