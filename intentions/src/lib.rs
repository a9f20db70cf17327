//! rhizome-intentions (placeholder until its issue lands).
