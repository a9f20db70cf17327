# PROVENANCE: hashicorp/consul command/helpers/helpers_test.go @ 02b9c0d1adc91247cafe496accf52e9f76aa7982,
#   TestParseConfigEntry case "service-intentions: wildcard destination", field `camel`.
# EXPECTED (Consul): VALID. A single `Sources { }` block decodes to a 1-element Sources list.
#   Client-side decode keeps Precedence = 6 (test expects Precedence: 6, comment "should be parsed, but we'll
#   ignore it later"); the server's Normalize() recomputes it anyway:
#     foo -> * : deny : 6
Kind = "service-intentions"
Name = "*"
Sources {
  Name   = "foo"
  Action = "deny"
  # should be parsed, but we'll ignore it later
  Precedence = 6
}
