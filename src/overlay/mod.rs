//! The clone overlay: a read-only master, a patch stage and a per-clone delta store make one
//! writable virtual disk. Testable without FUSE; the FUSE adapter (`crate::fuse`) only translates.

pub mod clone_disk;
pub mod delta;
pub mod error;
pub mod master;
pub mod patch;
pub mod state;
pub mod units;

pub use clone_disk::CloneDisk;
pub use delta::DeltaStore;
pub use error::{OverlayError, Result};
pub use master::{MasterFingerprint, MasterImage};
pub use patch::{MasterPassthrough, PatchStage};
pub use state::{AttachRequest, CloneState, StateMeta};
pub use units::{BlockIndex, Geometry, DEFAULT_BLOCK_SIZE};
