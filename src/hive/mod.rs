//! Registry hive (regf) reader.
