# PROVENANCE: hashicorp/consul test/integration/connect/envoy/case-l7-intentions/setup.sh
#   @ 146596f857e492ac6fd165ffd7d706a104fa42f5 - second `upsert_config_entry primary '...'` body, piped to
#   `consul config write -`. (A service-defaults entry with protocol = "http" for s2 is written first.)
# EXPECTED (Consul): VALID, L7. snake_case keys, single `sources { }` block, `http { }` blocks inside list elements,
#   `//` comments (HCL1 accepts //, # and /* */ comments). One source:
#     s1 -> s2 : L7 : 9, permissions (all allow, in order):
#       PathExact "/exact"; PathPrefix "/prefix"; PathRegex "/reg[ex]{2}";
#       PathExact "/hdr-present" + header x-test-debug Present; "/hdr-exact" + Exact "exact";
#       "/hdr-prefix" + Prefix "prefi"; "/hdr-suffix" + Suffix "uffix"; "/hdr-regex" + Regex "reg[ex]{2}";
#       PathExact "/method-match" + Methods GET,PUT
kind = "service-intentions"
name = "s2"
sources {
  name = "s1"
  permissions = [
    // paths
    {
      action = "allow"
      http { path_exact = "/exact" }
    },
    {
      action = "allow"
      http { path_prefix = "/prefix" }
    },
    {
      action = "allow"
      http { path_regex = "/reg[ex]{2}" }
    },
    // headers
    {
      action = "allow"
      http {
        path_exact = "/hdr-present"
        header = [{
          name    = "x-test-debug"
          present = true
        }]
      }
    },
    {
      action = "allow"
      http {
        path_exact = "/hdr-exact"
        header = [{
          name  = "x-test-debug"
          exact = "exact"
        }]
      }
    },
    {
      action = "allow"
      http {
        path_exact = "/hdr-prefix"
        header = [{
          name   = "x-test-debug"
          prefix = "prefi"
        }]
      }
    },
    {
      action = "allow"
      http {
        path_exact = "/hdr-suffix"
        header = [{
          name   = "x-test-debug"
          suffix = "uffix"
        }]
      }
    },
    {
      action = "allow"
      http {
        path_exact = "/hdr-regex"
        header = [{
          name  = "x-test-debug"
          regex = "reg[ex]{2}"
        }]
      }
    },
    // methods
    {
      action = "allow"
      http {
        path_exact = "/method-match"
        methods    = ["GET", "PUT"]
      }
    }
  ]
}
