//! Tests of the hive rewrite.
