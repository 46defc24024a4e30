//! The patch stage: what the clone shows for bytes the delta does not hold.
//!
//! The overlay asks the stage for every byte range that is not in the delta. A stage returns the
//! clone's *pristine* bytes there: the master's bytes with the clone's transformation applied
//! ([`MasterPassthrough`] for a plain copy, `crate::rewrite::stage::SidPatchStage` for the SID
//! rewrite). Pristine content is a pure function of the master and the clone's parameters, so the
//! mounted view, an eager export and a remount agree.
//!
//! A stage never writes the delta: the delta holds only blocks the guest wrote (whole blocks; a
//! partial write copies the block's pristine bytes around the guest's). A stage that transforms a
//! whole structure on first touch (a registry hive, `$Secure`) keeps the changed bytes in memory
//! and computes them again after a remount; the guest's writes win because the overlay never asks
//! the stage for a block the delta holds.

use super::error::Result;
use super::master::MasterImage;

pub trait PatchStage: Send + Sync {
    /// A short name for logs and `clone.json`.
    fn name(&self) -> &'static str;

    /// Fills `buf` with the clone's pristine bytes at disk offset `offset`. The range lies within
    /// the disk. An error fails this read only: a stage must not keep a transient error (a failed
    /// read of the master) for later reads. A panic is a bug; the overlay contains it and fails
    /// the read with EIO (`CloneDisk`).
    fn read_pristine(&self, master: &MasterImage, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// The plain copy (`--keep-sid`): the master's bytes pass through unchanged.
pub struct MasterPassthrough;

impl PatchStage for MasterPassthrough {
    fn name(&self) -> &'static str {
        "passthrough"
    }

    fn read_pristine(&self, master: &MasterImage, offset: u64, buf: &mut [u8]) -> Result<()> {
        master.read_at(offset, buf)
    }
}
