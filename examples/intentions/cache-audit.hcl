# Trying a default-deny rollout safely: in audit mode a deny is only logged and counted
# (rhizome_intention_decisions_total{...,decision="audit_deny"}, per rule), the connection goes through.
Kind = "service-intentions"
Name = "cache"
Mode = "audit"
Sources = [
  { Name = "web", Action = "allow" },
  { Name = "*", Action = "deny" },
]
