# A destination in another namespace, with sources from several namespaces.
Kind      = "service-intentions"
Name      = "api"
Namespace = "payments"
Meta = {
  owner = "payments-team"
}
Sources {
  Name      = "web"
  Namespace = "default"
  Action    = "allow"
}
Sources {
  Name      = "*"
  Namespace = "payments"
  Action    = "allow"
}
Sources {
  Name      = "*"
  Namespace = "*"
  Action    = "deny"
}
