//! The patch stage: what the clone shows for bytes the delta does not hold.
//!
//! The overlay asks the stage for every byte range that is not in the delta. A stage returns the
//! clone's *pristine* bytes there: the master's bytes with the clone's transformation applied (the
//! identity for now; the SID rewrite plugs in here). Pristine content must be a pure function of
//! the master and the clone's parameters, so the mounted view, an eager export and a remount agree.
//!
//! A stage that transforms a whole structure on first touch (a registry hive, `$Secure`) computes
//! every changed block at once and hands them to [`DeltaSink::store_pristine`]; the overlay then
//! serves those blocks from the delta, unless the guest has already written them (the guest's
//! write always wins).

use super::error::Result;
use super::master::MasterImage;
use super::units::BlockIndex;

/// Where a patch stage may persist whole blocks of pristine content.
pub trait DeltaSink {
    /// Stores `data` (exactly one block) as the pristine content of `block`, unless the delta
    /// already holds that block. Returns whether it was stored.
    fn store_pristine(&self, block: BlockIndex, data: &[u8]) -> Result<bool>;
    /// The delta's block size.
    fn block_size(&self) -> u32;
}

pub trait PatchStage: Send + Sync {
    /// A short name for logs and `clone.json`.
    fn name(&self) -> &'static str;

    /// Fills `buf` with the clone's pristine bytes at disk offset `offset`. The range lies within
    /// the disk and touches only blocks the delta did not hold when the overlay looked.
    fn read_pristine(
        &self,
        master: &MasterImage,
        offset: u64,
        buf: &mut [u8],
        sink: &dyn DeltaSink,
    ) -> Result<()>;
}

/// The plain copy (`--keep-sid`): the master's bytes pass through unchanged.
pub struct MasterPassthrough;

impl PatchStage for MasterPassthrough {
    fn name(&self) -> &'static str {
        "passthrough"
    }

    fn read_pristine(
        &self,
        master: &MasterImage,
        offset: u64,
        buf: &mut [u8],
        _sink: &dyn DeltaSink,
    ) -> Result<()> {
        master.read_at(offset, buf)
    }
}
