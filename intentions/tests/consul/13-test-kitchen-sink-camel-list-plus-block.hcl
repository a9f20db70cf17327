# PROVENANCE: hashicorp/consul command/helpers/helpers_test.go @ 02b9c0d1adc91247cafe496accf52e9f76aa7982,
#   TestParseConfigEntry case "service-intentions: kitchen sink", field `camel` (Go raw-string indentation removed).
#   The same HCL is decoded via structs.DecodeConfigEntry in agent/structs/config_entry_test.go (TestDecodeConfigEntry,
#   stored version in the search index) with the same expected struct.
# EXPECTED (Consul): VALID. Demonstrates MIXING `Sources = [ ... ]` with a later `Sources { ... }` block:
#   the test's expected api.ServiceIntentionsConfigEntry has 4 sources in document order:
#   foo, bar, l7, "*" (the block is APPENDED after the list elements). Meta {..} block -> map {foo=bar, gir=zim}.
#   After server Normalize (precedence, stable sort desc):
#     foo -> web : deny  : 9 (Type "consul", Description "foo desc")
#     bar -> web : allow : 9 (Description "bar desc")
#     l7  -> web : L7    : 9 permissions in order:
#          [deny  PathExact "/admin" + headers hdr-present Present, hdr-exact Exact "exact", hdr-prefix Prefix "prefix",
#                 hdr-suffix Suffix "suffix", hdr-regex Regex "regex", hdr-absent Present+Invert],
#          [allow PathPrefix "/v3/"],
#          [allow PathRegex "/v[12]/.*" Methods GET,POST]
#     *   -> web : deny  : 8 (Description "wild desc")
Kind = "service-intentions"
Name = "web"
Meta {
	"foo" = "bar"
	"gir" = "zim"
}
Sources = [
  {
	Name        = "foo"
	Action      = "deny"
	Type        = "consul"
	Description = "foo desc"
  },
  {
	Name        = "bar"
	Action      = "allow"
	Description = "bar desc"
  },
  {
	Name = "l7"
	Permissions = [
	  {
		Action = "deny"
		HTTP {
		  PathExact = "/admin"
		  Header = [
			{
			  Name    = "hdr-present"
			  Present = true
			},
			{
			  Name  = "hdr-exact"
			  Exact = "exact"
			},
			{
			  Name   = "hdr-prefix"
			  Prefix = "prefix"
			},
			{
			  Name   = "hdr-suffix"
			  Suffix = "suffix"
			},
			{
			  Name  = "hdr-regex"
			  Regex = "regex"
			},
			{
			  Name    = "hdr-absent"
			  Present = true
			  Invert  = true
			}
		  ]
		}
	  },
	  {
		Action = "allow"
		HTTP {
		  PathPrefix = "/v3/"
		}
	  },
	  {
		Action = "allow"
		HTTP {
		  PathRegex = "/v[12]/.*"
		  Methods   = ["GET", "POST"]
		}
	  }
	]
  }
]
Sources {
  Name        = "*"
  Action      = "deny"
  Description = "wild desc"
}
