//! The clone overlay: master + patch stage + delta store.
