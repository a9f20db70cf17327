//! rhizome-ca (placeholder until its issue lands).
