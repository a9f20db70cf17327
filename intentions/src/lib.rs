//! rhizome-intentions (placeholder until its issue lands).

pub mod hclsrc;
