# Who may connect to the database: only the web front end and the reporting jobs.
Kind = "service-intentions"
Name = "db"
Sources = [
  { Name = "web", Action = "allow", Description = "the shop front end" },
  { Name = "report-*", Action = "allow", Description = "nightly reporting jobs (prefix wildcard)" },
  { Name = "*", Action = "deny" },
]
