//! Helpers shared by the integration tests: rule sets written as HCL text.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rhizome_intentions::{Entry, RuleSet, ServiceRef};

/// HCL for one entry. Patterns are `NS/NAME`; actions `allow` / `deny`.
pub fn entry_hcl(dst: &str, sources: &[(&str, &str)], audit: bool) -> String {
    let (dns, dname) = dst.split_once('/').expect("NS/NAME");
    let mut s =
        format!("Kind = \"service-intentions\"\nName = \"{dname}\"\nNamespace = \"{dns}\"\n");
    if audit {
        s.push_str("Mode = \"audit\"\n");
    }
    s.push_str("Sources = [\n");
    for (src, action) in sources {
        let (ns, name) = src.split_once('/').expect("NS/NAME");
        s.push_str(&format!(
            "  {{ Name = \"{name}\", Namespace = \"{ns}\", Action = \"{action}\" }},\n"
        ));
    }
    s.push_str("]\n");
    s
}

/// Parses one entry written by [`entry_hcl`].
pub fn entry(dst: &str, sources: &[(&str, &str)]) -> Entry {
    Entry::parse(&entry_hcl(dst, sources, false), &format!("{dst}.hcl")).unwrap()
}

/// A rule set from `(destination, sources)` groups, one entry each.
pub fn set(groups: &[(&str, &[(&str, &str)])]) -> RuleSet {
    RuleSet::build(groups.iter().map(|(d, s)| entry(d, s))).unwrap()
}

/// Parses `NS/NAME`.
pub fn svc(s: &str) -> ServiceRef {
    s.parse().unwrap()
}
