//! sidfs: mount one read-only Windows master image many times; each mount is a clone whose
//! machine SID is replaced by a new one, patched lazily, with all differences in a per-clone delta.
//!
//! Data flows one way: master image → partition map → NTFS/hive understanding → patch plan →
//! clone overlay (delta store) → FUSE adapter. The FUSE layer ([`fuse`]) is a thin adapter over
//! [`overlay`], which is tested without a mount.

pub mod clone;
pub mod export;
pub mod fuse;
pub mod hive;
pub mod identity;
pub mod image;
pub mod inspect;
pub mod le;
pub mod mount;
pub mod mountinfo;
pub mod overlay;
pub mod panics;
pub mod qcow2;
pub mod render;
pub mod rewrite;
pub mod sid;
pub mod verify;

#[cfg(test)]
mod testutil;
