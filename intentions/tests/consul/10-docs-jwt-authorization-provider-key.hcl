# PROVENANCE: hashicorp/consul website/content/docs/connect/intentions/jwt-authorization.mdx
#   @ aaccd1ab5f17aac6a78bbfeaba1e5504a837d3bb, section "Update service intentions".
# EXPECTED (Consul): INVALID.
#   1) CLI decode (command/helpers ParseConfigEntry -> api.IntentionJWTProvider has no field "Provider"):
#      `invalid config key "JWT.Providers[0].Provider"` (mapstructure Metadata.Unused path; wrapped by
#      config write as "Failed to decode config entry input: ...").
#   2) Even if decoded: no Sources -> "At least one source is required" (JWT provider Name would also be empty ->
#      "JWT provider name is required", which is checked BEFORE the sources check).
#   Entry-level JWT.
Kind = "service-intentions"
Name = "web"
JWT = {
  Providers = [
    {
      Provider = "okta"
    }
  ]
}
