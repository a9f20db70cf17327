//! Multi-agent test harness.
