# DERIVED from 13-test-kitchen-sink-camel-list-plus-block.hcl (hashicorp/consul
#   command/helpers/helpers_test.go @ 02b9c0d1adc91247cafe496accf52e9f76aa7982, "kitchen sink"):
#   the same file with its L7 source (`l7`) removed, so rhizome (L4 only) loads it.
# EXPECTED (Consul's meaning): the `Sources = [...]` list and the later `Sources { }` block
#   are concatenated in file order: foo -> web deny 9, bar -> web allow 9, * -> web deny 8.
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
  }
]
Sources {
  Name        = "*"
  Action      = "deny"
  Description = "wild desc"
}
