# PROVENANCE: hashicorp/consul website/content/docs/secure-mesh/intention/jwt.mdx
#   @ b3e65e4e4978ea6240547e0f9a054d39b25149aa, section "Update service intentions" (newer corrected version of file 10).
# EXPECTED (Consul): decodes; INVALID in Validate(): JWT passes (provider Name set), then
#   "At least one source is required". Entry-level JWT. Docs call it "the minimum required configuration" but
#   Consul's validate() rejects an entry with zero Sources.
Kind = "service-intentions"
Name = "web"
JWT = {
  Providers = [
    {
      Name = "okta"
    }
  ]
}
