# PROVENANCE: hashicorp/consul command/helpers/helpers_test.go @ 02b9c0d1adc91247cafe496accf52e9f76aa7982,
#   TestParseConfigEntry case "service-intentions: wildcard destination", field `snake`.
# EXPECTED (Consul): same as 15:  foo -> * : deny : 6 (file's precedence = 6 ignored/recomputed server-side).
kind = "service-intentions"
name = "*"
sources {
  name   = "foo"
  action = "deny"
  # should be parsed, but we'll ignore it later
  precedence = 6
}
