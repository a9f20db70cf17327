# PROVENANCE: hashicorp/consul command/helpers/helpers_test.go @ 02b9c0d1adc91247cafe496accf52e9f76aa7982,
#   TestParseConfigEntry case "service-intentions: kitchen sink", field `snake` (Go raw-string indentation removed).
# EXPECTED (Consul): identical result to 13 (the test asserts the same expected struct for snake and camel):
#   lowercase keys match fields case-insensitively (mapstructure EqualFold); path_exact/path_prefix/path_regex are
#   `alias` tags translated by lib/decode.HookTranslateKeys. `sources = [...]` + `sources {}` -> 4 sources
#   foo(deny,9), bar(allow,9), l7(L7,9), *(deny,8) -> destination web.
kind = "service-intentions"
name = "web"
meta {
  "foo" = "bar"
  "gir" = "zim"
}
sources = [
  {
	name        = "foo"
	action      = "deny"
	type        = "consul"
	description = "foo desc"
  },
  {
	name        = "bar"
	action      = "allow"
	description = "bar desc"
  },
  {
	name = "l7"
	permissions = [
	  {
		action = "deny"
		http {
		  path_exact = "/admin"
		  header = [
			{
			  name    = "hdr-present"
			  present = true
			},
			{
			  name  = "hdr-exact"
			  exact = "exact"
			},
			{
			  name   = "hdr-prefix"
			  prefix = "prefix"
			},
			{
			  name   = "hdr-suffix"
			  suffix = "suffix"
			},
			{
			  name  = "hdr-regex"
			  regex = "regex"
			},
			{
			  name    = "hdr-absent"
			  present = true
			  invert  = true
			}
		  ]
		}
	  },
	  {
		action = "allow"
		http {
		  path_prefix = "/v3/"
		}
	  },
	  {
		action = "allow"
		http {
		  path_regex = "/v[12]/.*"
		  methods    = ["GET", "POST"]
		}
	  }
	]
  }
]
sources {
  name        = "*"
  action      = "deny"
  description = "wild desc"
}
