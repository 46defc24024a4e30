//! Test-only access to the real hives.
