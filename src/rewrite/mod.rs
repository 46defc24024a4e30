//! The SID rewrite: what replaces the old machine SID by the new one, everywhere it appears,
//! keeping every structure valid.
//!
//! [`SidMapping`] is the one place that knows the three forms of an occurrence (the binary 12-byte
//! sub-authority triple, and the string `S-1-5-21-a-b-c` in ASCII and UTF-16LE followed by a
//! non-digit) and replaces them size for size. Structure-aware transforms (hives, `$Secure`,
//! multi-sector records) build on it.

pub mod derive;
pub mod efs;
pub mod error;
pub mod ese;
pub mod ese_logs;
pub mod ese_structure;
pub mod evtx;
pub mod hive;
pub mod junction;
pub mod mapping;
pub mod secure;
pub mod shadow;
pub mod sid_ranges;
pub mod sqlite_wal;
pub mod stage;
pub mod stage_builder;
pub mod stream;
pub mod structures;
pub mod survey;
pub mod survey_cache;
pub mod wal_structure;
pub mod wmi;
pub mod wmi_structure;

pub use derive::{check_explicit_sid, derive_new_sid, DeriveError, OrderConstraints};
pub use error::RewriteError;
pub use mapping::{Form, Occurrence, SidMapping};
