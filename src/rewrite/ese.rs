//! Rewriting one ESE (JET Blue) database file — `SRUDB.dat`, `Windows.edb`, `qmgr.db`,
//! `DataStore.edb`, `WebCacheV01.dat`, `Current.mdb` — so that the old machine SID becomes the new
//! one and every page checksum that was valid in the master is valid in the clone.
//!
//! [`rewrite_ese`] is a pure function from (master file bytes, [`SidMapping`]) to the clone's file
//! bytes plus an [`EseReport`], or an [`EseError`] saying why the file cannot be rewritten
//! faithfully (the caller then refuses the master: docs/SEMANTICS.md invariant 8).
//!
//! Layout [libyal/libesedb `documentation/Extensible Storage Engine (ESE) Database File (EDB)
//! format.asciidoc`, "File header", "Page header", "Page flags"; microsoft/Extensible-Storage-Engine
//! (MIT) `dev/ese/src/checksum/checksum.cxx`, `dev/ese/src/ese/_osu/checksumu.cxx`]:
//! - the file is a sequence of pages of the size the file header gives (at 236);
//! - page 0 is the file header (signature 0x89ABCDEF at 4), page 1 its shadow copy; each has a
//!   32-bit checksum at 0: the XOR of every little-endian u32 of the page but the first, seeded
//!   with 0x89ABCDEF (the rest of a header page is zero, so the page size does not matter);
//! - the page at file offset `(n + 1) × page size` has page number `n`, and a checksum at 0 in
//!   one of three formats, chosen by the page-flags bit 0x2000 (u32 at 36) and the page size:
//!   - old (flag clear, pages of at most 8 KiB): u32 XOR of every u32 but the first, seeded with
//!     0x89ABCDEF, and the page number itself at 4;
//!   - new (flag set, pages of at most 8 KiB): XOR-32 at 0 and ECC-32 at 4 over the whole page,
//!     the first 8 bytes counted as zero ([`ecc_block`]), the XOR keyed by the page number;
//!   - large (16 and 32 KiB pages, always new): the page is cut into four blocks (4 KiB blocks for
//!     16 KiB pages, 8 KiB blocks for 32 KiB pages); blocks 1–3 have their XOR/ECC pairs at 40,
//!     48 and 56 (whole block counted), then block 0 has its pair at 0 (first 8 bytes counted as
//!     zero, so covering the three others).
//!
//! What it does:
//! 1. Checks the header: signature, file type (database), format version 0x620 with a revision
//!    this module knows ([`KNOWN_REVISIONS`]), a page size ESE uses.
//! 2. Walks the trees for compressed values (below). Replaces every occurrence of the old SID in
//!    every form in the whole file (sizes kept), and refuses if the SID appears 7-bit compressed (ESE's compression of short text values, which a
//!    byte search does not see as the SID) — such a value would need re-encoding this module does
//!    not do.
//! 3. For every page whose bytes changed: refuses if the master's checksum of that page was not
//!    valid (the clone must never be more broken than the master, nor silently repaired), else
//!    recomputes it in the page's own format. A database not shut down cleanly is refused when it
//!    holds the SID: its transaction logs would replay the old bytes over the new ones.
//!
//! Values ESE stored compressed are not seen by a byte search: before any replacement,
//! [`values::scan`] walks every tree from the catalog and decompresses them; one that holds the
//! SID, one that cannot be read, and trees the walk cannot follow in a database with compressed
//! values are refused ([`EseError::CompressedValueSid`], [`EseError::UnreadableValue`],
//! [`EseError::ValueStructure`]; docs/SEMANTICS.md "ESE logs and compressed values"), and so is
//! a SID split across two chunks of one long value ([`EseError::SplitLongValueSid`]), which
//! neither the byte search nor the search of one chunk sees.
//!
//! Bounded: one pass over the file; every offset taken from the file is range-checked.

#![forbid(unsafe_code)]

use std::fmt;

use serde::Serialize;

use super::hive::FormCounts;
use super::mapping::SidMapping;

/// The file header's signature, at offset 4 [libesedb "File header": "\xef\xcd\xab\x89"].
pub const FILE_SIGNATURE: u32 = 0x89AB_CDEF;
/// Seed of the header and old-format page XOR checksums [libesedb "File header", "Page header"].
const XOR_SEED: u32 = 0x89AB_CDEF;
/// File header fields [libesedb "File header"].
const HDR_SIGNATURE: usize = 4;
const HDR_FORMAT_VERSION: usize = 8;
const HDR_FILE_TYPE: usize = 12;
const HDR_DATABASE_STATE: usize = 52;
const HDR_FORMAT_REVISION: usize = 232;
const HDR_PAGE_SIZE: usize = 236;
/// The header is at least this long [libesedb: "(at least) 668 bytes"].
const HDR_MIN_LEN: usize = 668;
/// File type 0: a database (1 would be a streaming file) [libesedb "File type"].
const FILE_TYPE_DATABASE: u32 = 0;
/// Database state 2: JET_dbstateDirtyShutdown [libesedb "Database state"].
const STATE_DIRTY_SHUTDOWN: u32 = 2;
/// The only format version this module knows: 0x620 (every ESENT since Windows 2000).
pub const FORMAT_VERSION: u32 = 0x620;
/// Revisions of 0x620 whose page checksums are the ones above: 0x09 (Windows XP SP3) to 0x14
/// (Windows 10 and Exchange 2013) [libesedb "File format version and revision"].
pub const KNOWN_REVISIONS: std::ops::RangeInclusive<u32> = 0x09..=0x14;
/// Revision from which pages may carry the new (ECC) checksum format [libesedb: "As of version
/// 0x620 revision 0x0b"].
const REVISION_NEW_CHECKSUM: u32 = 0x0b;
/// Revision from which 16 and 32 KiB pages exist, with the extended page header [libesedb: "As of
/// version 0x620 revision 0x11"].
const REVISION_LARGE_PAGES: u32 = 0x11;
/// Page header: page flags (u32) [libesedb "Page header" at 36].
const PAGE_FLAGS: usize = 36;
/// Page flag: new record format, new checksum format [libesedb "Page flags"; ESE
/// `IbitNewChecksumFormatFlag`: bit 13 of the tenth u32].
const FLAG_NEW_CHECKSUM: u32 = 0x2000;
/// Extended page header: the XOR/ECC pairs of blocks 1, 2 and 3 of a large page [libesedb
/// "Extended checksum 1..3" at 40, 48, 56].
const LARGE_BLOCK_CHECKSUMS: usize = 40;
/// Pages above this size are "large" (four checksummed blocks) [ESE `FIsSmallPage`: ≤ 8 KiB].
const SMALL_PAGE_MAX: usize = 8192;

/// Which checksum format a page has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PageFormat {
    /// File header or its shadow: seeded XOR-32 at 0.
    Header,
    /// Seeded XOR-32 at 0, page number at 4.
    Old,
    /// XOR-32 (keyed by the page number) at 0, ECC-32 at 4.
    New,
    /// Four blocks, each with its XOR-32/ECC-32 pair (16 and 32 KiB pages).
    Large,
}

/// Why a file could not be rewritten as an ESE database. Offsets are absolute file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EseError {
    /// Shorter than the file header.
    Truncated { len: usize },
    /// No 0x89ABCDEF at offset 4.
    NotEse { found: u32 },
    /// A streaming file (or another type) rather than a database.
    FileType { found: u32 },
    /// A format version or revision this module does not know.
    UnknownFormat { version: u32, revision: u32 },
    /// A page size ESE does not use, or one the revision cannot have.
    PageSize { found: u32 },
    /// Not shut down cleanly: the transaction logs would replay old bytes.
    DirtyShutdown,
    /// A page that changes had a wrong checksum already in the master.
    StaleChecksum {
        at: usize,
        format: PageFormat,
        stored: u64,
        computed: u64,
    },
    /// A changed page in a format this module does not implement.
    UnsupportedPage { at: usize, why: &'static str },
    /// The SID changes bytes after the last whole page (no checksum known there).
    PartialPage { at: usize },
    /// The SID appears 7-bit compressed.
    CompressedSid { at: usize },
    /// A value ESE stored compressed holds the SID once decompressed (at: its stored bytes).
    CompressedValueSid { at: usize, scheme: &'static str },
    /// The SID runs across the junction of two chunks of one long value (`lid`; `offset`: the
    /// second chunk's offset in the value; `at`: its stored bytes).
    SplitLongValueSid { lid: u64, offset: u32, at: usize },
    /// A compressed (or encrypted) value sidfs cannot read, so it might hold the SID.
    UnreadableValue { at: usize, why: String },
    /// The walk of the database's trees met a structure it cannot follow, in a database that
    /// holds compressed values.
    ValueStructure { at: usize, why: &'static str },
}

impl From<values::Finding> for EseError {
    fn from(f: values::Finding) -> Self {
        match f {
            values::Finding::Sid { at, scheme } => EseError::CompressedValueSid {
                at,
                scheme: values::scheme_name(scheme),
            },
            values::Finding::Unreadable { at, why } => EseError::UnreadableValue {
                at,
                why: format!("is stored with {why}"),
            },
            values::Finding::Encrypted { at } => EseError::UnreadableValue {
                at,
                why: "is encrypted".to_string(),
            },
            values::Finding::SplitSid { lid, offset, at } => {
                EseError::SplitLongValueSid { lid, offset, at }
            }
        }
    }
}

impl fmt::Display for EseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EseError::Truncated { len } => write!(
                f,
                "{len} bytes, shorter than an ESE file header ({HDR_MIN_LEN})"
            ),
            EseError::NotEse { found } => write!(
                f,
                "no ESE signature at 4 (expected {FILE_SIGNATURE:#010x}, found {found:#010x})"
            ),
            EseError::FileType { found } => {
                write!(f, "file type {found}, not a database (0)")
            }
            EseError::UnknownFormat { version, revision } => write!(
                f,
                "ESE format {version:#x} revision {revision:#x}, which sidfs does not know (it knows {FORMAT_VERSION:#x} revisions {:#x} to {:#x})",
                KNOWN_REVISIONS.start(),
                KNOWN_REVISIONS.end()
            ),
            EseError::PageSize { found } => write!(f, "page size {found}, which ESE does not use"),
            EseError::DirtyShutdown => write!(
                f,
                "it was not shut down cleanly (database state dirty), so its transaction logs would replay the old SID"
            ),
            EseError::StaleChecksum {
                at,
                format,
                stored,
                computed,
            } => write!(
                f,
                "the {format:?}-format checksum of the page at {at:#x} is already wrong in the master (stored {stored:#x}, computed {computed:#x})"
            ),
            EseError::UnsupportedPage { at, why } => {
                write!(f, "the page at {at:#x} {why}")
            }
            EseError::PartialPage { at } => write!(
                f,
                "the SID lies after the last whole page, at {at:#x}, where no checksum is known"
            ),
            EseError::CompressedSid { at } => write!(
                f,
                "the SID is stored 7-bit compressed near {at:#x}, which sidfs does not re-encode"
            ),
            EseError::CompressedValueSid { at, scheme } => write!(
                f,
                "the {scheme}-compressed value at {at:#x} holds the SID, which a byte rewrite cannot replace"
            ),
            EseError::SplitLongValueSid { lid, offset, at } => write!(
                f,
                "the SID is split across two chunks of long value {lid:#x} at its offset {offset} (chunk stored at {at:#x}), which a byte rewrite cannot replace"
            ),
            EseError::UnreadableValue { at, why } => write!(
                f,
                "the value at {at:#x} {why}, which sidfs cannot read, so it might hold the SID"
            ),
            EseError::ValueStructure { at, why } => write!(
                f,
                "it holds compressed values, and its trees have {why} (near {at:#x}), so sidfs cannot check them all for the SID"
            ),
        }
    }
}

impl std::error::Error for EseError {}

/// What [`rewrite_ese`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EseReport {
    /// Every occurrence replaced, by form.
    pub replaced: FormCounts,
    pub page_size: u32,
    pub format_revision: u32,
    /// Whole pages in the file (headers included).
    pub pages: usize,
    /// Pages whose bytes changed, by checksum format.
    pub header_pages_changed: usize,
    pub old_pages_changed: usize,
    pub new_pages_changed: usize,
    pub large_pages_changed: usize,
    /// Compressed values and long-value chunks found by the walk (`values::scan`), none
    /// holding the SID.
    pub compressed_values: usize,
}

impl EseReport {
    pub fn pages_changed(&self) -> usize {
        self.header_pages_changed
            + self.old_pages_changed
            + self.new_pages_changed
            + self.large_pages_changed
    }
}

/// The clone's database file and what changed.
#[derive(Debug, Clone)]
pub struct EseRewrite {
    /// The whole clone file, as long as the master's.
    pub bytes: Vec<u8>,
    pub report: EseReport,
}

/// The u32 at `at`, or 0 past the end (an absent field reads as unset).
fn u32_at(buf: &[u8], at: usize) -> u32 {
    crate::le::u32_at(buf, at).unwrap_or(0)
}

/// The validated file header fields the rewrite needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EseHeader {
    pub format_version: u32,
    pub format_revision: u32,
    pub page_size: u32,
    pub database_state: u32,
}

impl EseHeader {
    /// True if `bytes` starts like an ESE file (signature at 4): the survey's test.
    pub fn has_signature(bytes: &[u8]) -> bool {
        bytes.len() >= 8 && u32_at(bytes, HDR_SIGNATURE) == FILE_SIGNATURE
    }

    pub fn parse(bytes: &[u8]) -> Result<EseHeader, EseError> {
        if bytes.len() < HDR_MIN_LEN {
            return Err(EseError::Truncated { len: bytes.len() });
        }
        let found = u32_at(bytes, HDR_SIGNATURE);
        if found != FILE_SIGNATURE {
            return Err(EseError::NotEse { found });
        }
        let file_type = u32_at(bytes, HDR_FILE_TYPE);
        if file_type != FILE_TYPE_DATABASE {
            return Err(EseError::FileType { found: file_type });
        }
        let h = EseHeader {
            format_version: u32_at(bytes, HDR_FORMAT_VERSION),
            format_revision: u32_at(bytes, HDR_FORMAT_REVISION),
            page_size: u32_at(bytes, HDR_PAGE_SIZE),
            database_state: u32_at(bytes, HDR_DATABASE_STATE),
        };
        if h.format_version != FORMAT_VERSION || !KNOWN_REVISIONS.contains(&h.format_revision) {
            return Err(EseError::UnknownFormat {
                version: h.format_version,
                revision: h.format_revision,
            });
        }
        let small = [2048, 4096, 8192].contains(&h.page_size);
        let large = [16384, 32768].contains(&h.page_size);
        if !(small || large && h.format_revision >= REVISION_LARGE_PAGES) {
            return Err(EseError::PageSize { found: h.page_size });
        }
        Ok(h)
    }
}

/// The seeded XOR-32 of a header page or an old-format page: every little-endian u32 but the
/// first (the stored checksum), XORed with 0x89ABCDEF.
pub fn xor_checksum(page: &[u8]) -> u32 {
    page.chunks_exact(4).skip(1).fold(XOR_SEED, |acc, w| {
        acc ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]])
    })
}

/// The ECC-32 and XOR-32 of one block of at most 8 KiB (a power of two), as ESE's new checksum
/// format defines them: the block is a matrix of u32 rows; the XOR is the column parity (keyed by
/// XORing in the page number), the ECC holds, for the rows of odd parity, the XOR of their indexes
/// and of their complements, and the same for the columns of odd parity, packed as
/// `qqqqqqqqqqqsssssppppppppppprrrrr` (q: ~row, s: ~column, p: row, r: column; the bits a smaller
/// block does not need are zero). `header_block`: the block starts the page, its first two u32
/// (the checksum itself) count as zero. Returns (ecc, xor).
pub fn ecc_block(block: &[u8], pgno: u32, header_block: bool) -> (u32, u32) {
    let rows = (block.len() / 4) as u32;
    let (mut p, mut q, mut column_parity) = (0u32, 0u32, 0u32);
    for (i, w) in block.chunks_exact(4).enumerate() {
        if header_block && i < 2 {
            continue;
        }
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        column_parity ^= w;
        if w.count_ones() % 2 == 1 {
            let i = i as u32;
            p ^= i;
            q ^= !i;
        }
    }
    let (mut r, mut s) = (0u32, 0u32);
    for bit in 0..32u32 {
        if column_parity & (1 << bit) != 0 {
            r ^= bit;
            s ^= !bit;
        }
    }
    let row_mask = rows.wrapping_sub(1);
    let ecc = ((q & row_mask) << 21) | ((s & 31) << 16) | ((p & row_mask) << 5) | (r & 31);
    (ecc, column_parity ^ pgno)
}

/// The checksum format of a database page (not a header page) of a database with `header`.
fn page_format(page: &[u8], header: &EseHeader) -> Result<PageFormat, &'static str> {
    let new = u32_at(page, PAGE_FLAGS) & FLAG_NEW_CHECKSUM != 0;
    if page.len() > SMALL_PAGE_MAX {
        // Large pages always have the new format [ESE `ComputePageChecksum`].
        return if new {
            Ok(PageFormat::Large)
        } else {
            Err("is a large page without the new checksum format flag")
        };
    }
    if !new {
        return Ok(PageFormat::Old);
    }
    if header.format_revision < REVISION_NEW_CHECKSUM {
        return Err("has the new checksum format flag in a database older than that format");
    }
    Ok(PageFormat::New)
}

/// The block size of a large page [ESE `CbBlockSize`: 4 KiB blocks for 16 KiB pages, 8 KiB
/// blocks for 32 KiB pages].
fn large_block(page_len: usize) -> usize {
    if page_len <= 16384 {
        4096
    } else {
        8192
    }
}

/// The checksum bytes a page of `format` should carry, as (offset in the page, bytes).
fn computed_checksums(page: &[u8], pgno: u32, format: PageFormat) -> Vec<(usize, [u8; 8])> {
    let pair = |ecc: u32, xor: u32| {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&xor.to_le_bytes());
        b[4..].copy_from_slice(&ecc.to_le_bytes());
        b
    };
    match format {
        PageFormat::Header => {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&xor_checksum(page).to_le_bytes());
            b[4..].copy_from_slice(&page[4..8]);
            vec![(0, b)]
        }
        PageFormat::Old => {
            // The XOR covers the page number at 4: computed as if it were already there.
            let xor = xor_checksum(page) ^ u32_at(page, 4) ^ pgno;
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&xor.to_le_bytes());
            b[4..].copy_from_slice(&pgno.to_le_bytes());
            vec![(0, b)]
        }
        PageFormat::New => {
            let (ecc, xor) = ecc_block(page, pgno, true);
            vec![(0, pair(ecc, xor))]
        }
        PageFormat::Large => {
            let block = large_block(page.len());
            let mut out = Vec::new();
            let mut with_blocks = page.to_vec();
            for (i, b) in page.chunks_exact(block).enumerate().skip(1).take(3) {
                let (ecc, xor) = ecc_block(b, pgno, false);
                let at = LARGE_BLOCK_CHECKSUMS + (i - 1) * 8;
                let bytes = pair(ecc, xor);
                with_blocks[at..at + 8].copy_from_slice(&bytes);
                out.push((at, bytes));
            }
            let (ecc, xor) = ecc_block(&with_blocks[..block], pgno, true);
            out.insert(0, (0, pair(ecc, xor)));
            out
        }
    }
}

fn stored_u64(page: &[u8], at: usize) -> u64 {
    u64::from(u32_at(page, at)) | (u64::from(u32_at(page, at + 4)) << 32)
}

/// Whether the page's stored checksums are the ones its bytes give; `Err` names the first that is
/// not (stored, computed as u64: XOR in the low half, ECC or page number in the high half).
pub fn check_page(page: &[u8], pgno: u32, format: PageFormat) -> Result<(), (u64, u64)> {
    for (at, want) in computed_checksums(page, pgno, format) {
        let stored = stored_u64(page, at);
        let computed = u64::from_le_bytes(want);
        if stored != computed {
            return Err((stored, computed));
        }
    }
    Ok(())
}

/// Writes the checksums of `format` into the page.
fn set_checksums(page: &mut [u8], pgno: u32, format: PageFormat) {
    for (at, bytes) in computed_checksums(page, pgno, format) {
        page[at..at + 8].copy_from_slice(&bytes);
    }
}

/// The format of page `index` (0 and 1 are the header and its shadow) and its page number.
pub fn page_identity(
    page: &[u8],
    index: usize,
    header: &EseHeader,
) -> Result<(PageFormat, u32), &'static str> {
    if index < 2 {
        return Ok((PageFormat::Header, 0));
    }
    let pgno = u32::try_from(index - 1).map_err(|_| "has a page number beyond 32 bits")?;
    Ok((page_format(page, header)?, pgno))
}

/// The SID's ASCII text packed as ESE's 7-bit compression packs characters (seven bits each,
/// least significant first), once for each of the 8 bit phases it can start at: the whole bytes
/// every such packing is sure to contain.
fn seven_bit_patterns(text: &[u8]) -> Vec<Vec<u8>> {
    (0..8usize)
        .map(|phase| {
            let bits = phase + 7 * text.len();
            let mut packed = vec![0u8; bits.div_ceil(8)];
            for (i, c) in text.iter().enumerate() {
                for b in 0..7 {
                    if c & (1 << b) != 0 {
                        let at = phase + 7 * i + b;
                        packed[at / 8] |= 1 << (at % 8);
                    }
                }
            }
            // Only the bytes whose eight bits all belong to the text.
            let first = phase.div_ceil(8);
            let last = bits / 8;
            packed[first..last].to_vec()
        })
        .collect()
}

/// The first place where the SID appears 7-bit compressed (as `S-1-5-21-…` or `s-1-5-21-…`), if
/// any.
fn find_seven_bit_sid(bytes: &[u8], map: &SidMapping) -> Option<usize> {
    let upper = map.old().ascii();
    let mut lower = upper.clone();
    lower[0] = b's';
    [upper, lower]
        .iter()
        .flat_map(|text| seven_bit_patterns(text))
        .filter_map(|p| memchr::memmem::find(bytes, &p))
        .min()
}

/// Rewrites the SID in one ESE database file (see the module documentation).
pub fn rewrite_ese(original: &[u8], map: &SidMapping) -> Result<EseRewrite, EseError> {
    let header = EseHeader::parse(original)?;
    let page_size = header.page_size as usize;
    let mut bytes = original.to_vec();
    let mut report = EseReport {
        page_size: header.page_size,
        format_revision: header.format_revision,
        pages: original.len() / page_size,
        ..EseReport::default()
    };
    for occ in map.find_all(original, true) {
        report.replaced.add(occ.form);
    }
    if let Some(at) = find_seven_bit_sid(original, map) {
        return Err(EseError::CompressedSid { at });
    }
    let scan = values::scan(original, page_size, map)?;
    report.compressed_values = scan.compressed + scan.compressed_chunks;
    if let Some((at, why)) = scan.structure {
        if report.compressed_values > 0 {
            return Err(EseError::ValueStructure { at, why });
        }
    }
    if report.replaced.total() == 0 {
        return Ok(EseRewrite { bytes, report });
    }
    if header.database_state == STATE_DIRTY_SHUTDOWN {
        return Err(EseError::DirtyShutdown);
    }
    map.replace_all(&mut bytes);
    let whole = report.pages * page_size;
    if let Some(i) = (whole..bytes.len()).find(|&i| bytes[i] != original[i]) {
        return Err(EseError::PartialPage { at: i });
    }
    for (index, (old, new)) in original[..whole]
        .chunks_exact(page_size)
        .zip(bytes[..whole].chunks_exact_mut(page_size))
        .enumerate()
    {
        if old == new {
            continue;
        }
        let at = index * page_size;
        let (format, pgno) = page_identity(old, index, &header)
            .map_err(|why| EseError::UnsupportedPage { at, why })?;
        if format != PageFormat::Header && page_format(new, &header) != Ok(format) {
            return Err(EseError::UnsupportedPage {
                at,
                why: "would change its checksum format flag",
            });
        }
        check_page(old, pgno, format).map_err(|(stored, computed)| EseError::StaleChecksum {
            at,
            format,
            stored,
            computed,
        })?;
        set_checksums(new, pgno, format);
        match format {
            PageFormat::Header => report.header_pages_changed += 1,
            PageFormat::Old => report.old_pages_changed += 1,
            PageFormat::New => report.new_pages_changed += 1,
            PageFormat::Large => report.large_pages_changed += 1,
        }
    }
    Ok(EseRewrite { bytes, report })
}

/// A mapping from `old` to a SID of the same shape, for checks that depend only on the old SID
/// (what `inspect` reports before any new SID is chosen).
pub fn probe_mapping(old: crate::sid::MachineSid) -> Option<SidMapping> {
    let [a, b, c] = old.digits().map(|d| 10u32.pow(d.saturating_sub(1)));
    let mut probe = crate::sid::MachineSid::new(a, b, c);
    if probe == old {
        probe = crate::sid::MachineSid::new(a + 1, b, c);
    }
    SidMapping::new(old, probe).ok()
}

/// Pages of a database whose stored checksums are wrong (empty pages, with zero at 0, skipped):
/// for tests and `inspect`. `Err` if the header is not one [`rewrite_ese`] accepts.
pub fn bad_pages(bytes: &[u8]) -> Result<Vec<usize>, EseError> {
    let header = EseHeader::parse(bytes)?;
    let page_size = header.page_size as usize;
    let mut bad = Vec::new();
    for (index, page) in bytes.chunks_exact(page_size).enumerate() {
        if u32_at(page, 0) == 0 {
            continue;
        }
        let ok = page_identity(page, index, &header)
            .is_ok_and(|(format, pgno)| check_page(page, pgno, format).is_ok());
        if !ok {
            bad.push(index * page_size);
        }
    }
    Ok(bad)
}

pub mod values;

#[cfg(test)]
mod tests;
