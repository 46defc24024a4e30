//! The view of the volume that the `ntfs` crate reads.
//!
//! `Ntfs::file()` finds record N through the `$DATA` attribute in record 0 itself and documents
//! that it assumes the MFT has no attribute list: on a fragmented MFT (record 0 with an
//! `$ATTRIBUTE_LIST`, further `$DATA` extents in extension records) every record past the first
//! piece is "invalid" to it. Our own parser joins every piece (`mft_scan::mft_runs`), so the
//! crate gets a view in which record 0's first `$DATA` piece maps the whole MFT as one run at a
//! virtual cluster past the end of the volume, and reads there are served from the real MFT
//! clusters. Everything else reads the volume unchanged. Positions the crate reports inside that
//! virtual range are never converted to image offsets (sidfs takes record locations from
//! [`super::attribute::MftMap`]).
#![forbid(unsafe_code)]

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::attribute::MftMap;
use super::multi_sector::redo_fixups;
use super::record::{AttributeValue, FileRecord, TYPE_ATTRIBUTE_LIST, TYPE_DATA};
use crate::image::reader::{seek_target, ImageFile, ImageOffset, PartitionReader};

/// Header fields of a non-resident attribute [ntfs-3g layout.h ATTR_RECORD].
const HIGHEST_VCN: usize = 0x18;
const MAPPING_PAIRS_OFFSET: usize = 0x20;
const ATTR_LENGTH: usize = 0x04;

/// Record 0 as the crate sees it, and the virtual run it names.
#[derive(Debug)]
pub(crate) struct MftView {
    /// Partition offset of record 0 and its bytes as served (fixups applied).
    record0_at: u64,
    record0: Vec<u8>,
    /// Partition offset of the virtual run and its length (the MFT's allocated clusters).
    virtual_at: u64,
    virtual_len: u64,
    cluster: u64,
    /// Partition offset of each MFT byte (through every piece).
    map: Arc<MftMap>,
}

impl MftView {
    /// The view for a volume whose record 0 has an attribute list; `None` when the crate reads
    /// this MFT correctly as it is (no list), or when record 0 cannot be rewritten (then the
    /// crate fails on the records it cannot find: an error, never wrong data).
    pub(crate) fn new(
        image: &ImageFile,
        start: ImageOffset,
        len: u64,
        mft_at: u64,
        map: Arc<MftMap>,
    ) -> Option<MftView> {
        let size = u64::from(map.record_size());
        let mut raw = image
            .read_vec(
                ImageOffset(start.0.checked_add(mft_at)?),
                size,
                1 << 16,
                "MFT",
            )
            .ok()?;
        let mut unfixed = raw.clone();
        let rec = FileRecord::parse(&mut unfixed, ImageOffset(start.0 + mft_at)).ok()?;
        if !rec.attributes.iter().any(|a| a.ty == TYPE_ATTRIBUTE_LIST) {
            return None;
        }
        let data = rec.attributes.iter().find(|a| {
            a.ty == TYPE_DATA
                && a.name.is_empty()
                && matches!(a.value, AttributeValue::NonResident { lowest_vcn: 0, .. })
        })?;
        let cluster = map.cluster();
        let clusters = map.data_size().div_ceil(cluster);
        let virtual_lcn = len.div_ceil(cluster).checked_add(1)?;
        let mut pairs = vec![0x88u8];
        pairs.extend(clusters.to_le_bytes());
        pairs.extend(virtual_lcn.to_le_bytes());
        pairs.push(0);
        let a = data.at;
        let field = |o: usize| unfixed.get(a + o..a + o + 4).map(|b| b.to_vec());
        let attr_len = u32::from_le_bytes(field(ATTR_LENGTH)?.try_into().ok()?) as usize;
        let mp = u16::from_le_bytes(field(MAPPING_PAIRS_OFFSET)?[..2].try_into().ok()?) as usize;
        if mp.checked_add(pairs.len())? > attr_len || a + attr_len > unfixed.len() {
            return None;
        }
        unfixed[a + HIGHEST_VCN..a + HIGHEST_VCN + 8]
            .copy_from_slice(&clusters.checked_sub(1)?.to_le_bytes());
        unfixed[a + mp..a + mp + pairs.len()].copy_from_slice(&pairs);
        redo_fixups(&mut unfixed);
        raw.copy_from_slice(&unfixed);
        Some(MftView {
            record0_at: mft_at,
            record0: raw,
            virtual_at: virtual_lcn.checked_mul(cluster)?,
            virtual_len: clusters.checked_mul(cluster)?,
            cluster,
            map,
        })
    }
}

/// A [`PartitionReader`] with the MFT view laid over it, for the `ntfs` crate.
#[derive(Clone, Debug)]
pub(crate) struct CrateReader {
    inner: PartitionReader,
    view: Option<Arc<MftView>>,
    pos: u64,
}

impl CrateReader {
    pub(crate) fn new(inner: PartitionReader, view: Option<Arc<MftView>>) -> CrateReader {
        CrateReader {
            inner,
            view,
            pos: 0,
        }
    }

    fn read_inner(&mut self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.seek(SeekFrom::Start(at))?;
        self.inner.read(buf)
    }
}

impl Read for CrateReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos;
        let n = match self.view.clone() {
            None => self.read_inner(pos, buf)?,
            Some(v) => {
                let rec_end = v.record0_at + v.record0.len() as u64;
                if pos >= v.record0_at && pos < rec_end {
                    let s = (pos - v.record0_at) as usize;
                    let n = buf.len().min(v.record0.len() - s);
                    buf[..n].copy_from_slice(&v.record0[s..s + n]);
                    n
                } else if pos >= v.virtual_at && pos - v.virtual_at < v.virtual_len {
                    let logical = pos - v.virtual_at;
                    let left = (v.cluster - logical % v.cluster).min(v.virtual_len - logical);
                    let n = (buf.len() as u64).min(left) as usize;
                    match v.map.partition_offset(logical) {
                        Some(p) => self.read_inner(p, &mut buf[..n])?,
                        None => {
                            buf[..n].fill(0);
                            n
                        }
                    }
                } else {
                    // Stop at record 0, so that its served bytes are not bypassed.
                    let limit = if pos < v.record0_at {
                        ((v.record0_at - pos) as usize).min(buf.len())
                    } else {
                        buf.len()
                    };
                    self.read_inner(pos, &mut buf[..limit])?
                }
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for CrateReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(pos, self.inner.len(), self.pos)?;
        Ok(self.pos)
    }
}
