//! The lookup structure behind evaluation: patterns keyed by namespace and name.
//!
//! Lookups visit candidates in precedence order (exact name, prefixes longest first,
//! `ns/*`, then `*/*`) with a handful of hash probes, whatever the number of rules.

use std::collections::HashMap;

use crate::pattern::{NamePattern, NamespacePattern, ServicePattern};

/// Values keyed by service pattern, searchable by a concrete service.
#[derive(Debug, Clone)]
pub(crate) struct PatternIndex<T> {
    namespaces: HashMap<String, NameIndex<T>>,
    any: Option<T>,
}

/// The patterns of one exact namespace.
#[derive(Debug, Clone)]
struct NameIndex<T> {
    exact: HashMap<String, T>,
    prefixes: HashMap<String, T>,
    /// Distinct prefix lengths, longest first, so only lengths in use are probed.
    prefix_lens: Vec<usize>,
    any: Option<T>,
}

impl<T> Default for PatternIndex<T> {
    fn default() -> Self {
        Self {
            namespaces: HashMap::new(),
            any: None,
        }
    }
}

impl<T> Default for NameIndex<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            prefixes: HashMap::new(),
            prefix_lens: Vec::new(),
            any: None,
        }
    }
}

impl<T> PatternIndex<T> {
    /// The slot for `pattern`, created with `make` when absent.
    pub(crate) fn slot(&mut self, pattern: &ServicePattern, make: impl FnOnce() -> T) -> &mut T {
        let ns = match pattern.namespace() {
            NamespacePattern::Any => return self.any.get_or_insert_with(make),
            NamespacePattern::Exact(ns) => ns.as_str(),
        };
        let names = self.namespaces.entry(ns.to_owned()).or_default();
        match pattern.name() {
            NamePattern::Any => names.any.get_or_insert_with(make),
            NamePattern::Exact(n) => names
                .exact
                .entry(n.as_str().to_owned())
                .or_insert_with(make),
            NamePattern::Prefix(p) => {
                if let Err(at) = names.prefix_lens.binary_search_by(|l| p.len().cmp(l)) {
                    names.prefix_lens.insert(at, p.len());
                }
                names.prefixes.entry(p.clone()).or_insert_with(make)
            }
        }
    }

    /// Calls `f` on the values whose pattern matches `namespace/name`, most specific
    /// first, and returns the first `Some` it gives.
    pub(crate) fn find_map<R>(
        &self,
        namespace: &str,
        name: &str,
        mut f: impl FnMut(&T) -> Option<R>,
    ) -> Option<R> {
        if let Some(names) = self.namespaces.get(namespace) {
            if let Some(r) = names.exact.get(name).and_then(&mut f) {
                return Some(r);
            }
            for &len in &names.prefix_lens {
                let found = name.get(..len).and_then(|p| names.prefixes.get(p));
                if let Some(r) = found.and_then(&mut f) {
                    return Some(r);
                }
            }
            if let Some(r) = names.any.as_ref().and_then(&mut f) {
                return Some(r);
            }
        }
        self.any.as_ref().and_then(f)
    }
}
