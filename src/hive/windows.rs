//! Windows facts read from hives.
