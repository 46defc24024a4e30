//! Every compressed value of an ESE database, found by walking its B-trees from the catalog, and
//! decompressed, so that a SID a byte search cannot see (docs/SEMANTICS.md "ESE logs and
//! compressed values") is found.
//!
//! The walk (docs/FORMAT-FACTS.md §6.1):
//! - the catalog (`MSysObjects`) is the tree rooted at page 4; each of its records with type 1
//!   (table) or 4 (long values) names the root page of a tree in its fixed column 4;
//! - from each root, branch nodes lead to child pages (a page is visited at most once in the
//!   whole walk); leaf pages of a table or the catalog hold records, leaf pages of a long-value
//!   tree hold long-value roots and chunks; space-tree and index pages are never entered;
//! - a record's tagged values whose flags byte says *compressed* are decompressed (the first
//!   instance of a multi-value, the only one ESE compresses); a long-value chunk shorter than its
//!   place in the value is compressed and is decompressed;
//! - each plain value is searched for every SID form of the mapping, and so is each junction of
//!   two consecutive chunks of one long value (in offset order; plain chunks as well as
//!   compressed ones), where a SID split across the two is seen by no other search.
//!
//! Bounded: every page once, every offset range-checked, every decompression capped by the
//! value's declared size and [`MAX_PLAIN`]. No input panics.

#![forbid(unsafe_code)]

use super::super::mapping::{Form, SidMapping, SEARCH_CONTEXT};
use crate::le::{u16_at, u32_at};

/// Hard cap on one decompressed value or chunk.
pub const MAX_PLAIN: usize = 1 << 20;
/// The catalog's root page [libesedb "Catalog": FDP 4; ESE `pgnoFDPMSO`].
const CATALOG_ROOT: u32 = 4;
/// Bytes kept on each side of a junction of two long-value chunks: every SID form whole, with
/// the code unit that follows it.
const JUNCTION_CONTEXT: usize = SEARCH_CONTEXT;
/// B-trees deeper than this are not followed.
const MAX_DEPTH: usize = 16;

/// Page header fields [libesedb "Page header"].
const PG_OBJID: usize = 24;
const PG_ITAG: usize = 34;
const PG_FLAGS: usize = 36;
const PAGE_ROOT: u32 = 0x1;
const PAGE_LEAF: u32 = 0x2;
const PAGE_EMPTY: u32 = 0x8;
const PAGE_SPACE_TREE: u32 = 0x20;
const PAGE_INDEX: u32 = 0x40;
const PAGE_LONG_VALUE: u32 = 0x80;
/// Node (tag) flag: the key shares a prefix with the page's tag 0.
const NODE_PREFIX: u8 = 0x4;
/// Node (tag) flag: deleted (kept until ESE cleans the page up).
const NODE_DELETED: u8 = 0x2;

/// Tagged value flags byte [ESE `TAGFLD_HEADER`].
const TV_COMPRESSED: u8 = 0x02;
const TV_SEPARATED: u8 = 0x04;
const TV_MULTI: u8 = 0x08;
const TV_TWO: u8 = 0x10;
const TV_NULL: u8 = 0x20;
const TV_ENCRYPTED: u8 = 0x40;

/// Compression schemes: the upper 5 bits of a compressed value's first byte [ESE
/// `compression.cxx` `COMPRESSION_SCHEME`].
pub const SCHEME_7BIT_ASCII: u8 = 1;
pub const SCHEME_7BIT_UNICODE: u8 = 2;
pub const SCHEME_XPRESS: u8 = 3;
pub const SCHEME_SCRUB: u8 = 4;

/// Why a value could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecodable {
    /// A scheme sidfs does not decompress (XPRESS9 5, XPRESS10 6, LZ4 7, or unknown).
    Scheme(u8),
    /// The stream is broken (named).
    Corrupt(&'static str),
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undecodable::Scheme(s) => write!(f, "{} compression", scheme_name(*s)),
            Undecodable::Corrupt(why) => write!(f, "a broken compressed stream ({why})"),
        }
    }
}

/// The name of a compression scheme.
pub fn scheme_name(scheme: u8) -> &'static str {
    match scheme {
        0 => "no (scheme 0)",
        SCHEME_7BIT_ASCII => "7-bit ASCII",
        SCHEME_7BIT_UNICODE => "7-bit Unicode",
        SCHEME_XPRESS => "XPRESS",
        SCHEME_SCRUB => "scrub",
        5 => "XPRESS9",
        6 => "XPRESS10",
        7 => "LZ4",
        _ => "unknown",
    }
}

/// ESE 7-bit decompression [ESE `ErrDecompress7BitAscii_`/`Unicode_`]: the low 3 bits of the
/// header byte are the used bits of the last byte minus one; characters are 7 bits each, least
/// significant first, from byte 1; `wide` writes each as UTF-16LE.
pub fn decompress_7bit(value: &[u8], wide: bool) -> Result<Vec<u8>, Undecodable> {
    let (&head, body) = value.split_first().ok_or(Undecodable::Corrupt("empty"))?;
    if body.is_empty() {
        return Err(Undecodable::Corrupt("7-bit value without data"));
    }
    let bits = (body.len() - 1) * 8 + usize::from(head & 7) + 1;
    let chars = bits / 7;
    if chars.saturating_mul(if wide { 2 } else { 1 }) > MAX_PLAIN {
        return Err(Undecodable::Corrupt("larger than the cap"));
    }
    let mut out = Vec::with_capacity(chars * if wide { 2 } else { 1 });
    for i in 0..chars {
        let bit = i * 7;
        let lo = u16::from(body[bit / 8]);
        let hi = u16::from(body.get(bit / 8 + 1).copied().unwrap_or(0));
        let c = (((hi << 8) | lo) >> (bit % 8)) as u8 & 0x7f;
        out.push(c);
        if wide {
            out.push(0);
        }
    }
    Ok(out)
}

/// MS-XCA "Plain LZ77 Decompression" (§2.4), output at most `cap` bytes.
pub fn decompress_lz77(input: &[u8], cap: usize) -> Result<Vec<u8>, Undecodable> {
    let cap = cap.min(MAX_PLAIN);
    let mut out: Vec<u8> = Vec::new();
    let (mut pos, mut flags, mut nflags) = (0usize, 0u32, 0u32);
    let mut half: Option<usize> = None;
    let byte = |at: usize| {
        input
            .get(at)
            .copied()
            .ok_or(Undecodable::Corrupt("truncated"))
    };
    loop {
        if nflags == 0 {
            if pos == input.len() {
                return Ok(out);
            }
            flags = u32_at(input, pos).ok_or(Undecodable::Corrupt("truncated flags"))?;
            pos += 4;
            nflags = 32;
        }
        nflags -= 1;
        if flags & (1 << nflags) == 0 {
            if pos == input.len() {
                return Ok(out);
            }
            if out.len() >= cap {
                return Err(Undecodable::Corrupt("longer than its declared size"));
            }
            out.push(byte(pos)?);
            pos += 1;
            continue;
        }
        if pos == input.len() {
            return Ok(out);
        }
        let m = u16_at(input, pos).ok_or(Undecodable::Corrupt("truncated match"))?;
        pos += 2;
        let offset = usize::from(m / 8) + 1;
        let mut len = usize::from(m % 8);
        if len == 7 {
            len = match half.take() {
                None => {
                    half = Some(pos);
                    let b = byte(pos)?;
                    pos += 1;
                    usize::from(b % 16)
                }
                Some(at) => usize::from(byte(at)? / 16),
            };
            if len == 15 {
                len = usize::from(byte(pos)?);
                pos += 1;
                if len == 255 {
                    len = usize::from(u16_at(input, pos).ok_or(Undecodable::Corrupt("truncated"))?);
                    pos += 2;
                    if len == 0 {
                        let l = u32_at(input, pos).ok_or(Undecodable::Corrupt("truncated"))?;
                        len = usize::try_from(l).map_err(|_| Undecodable::Corrupt("length"))?;
                        pos += 4;
                    }
                    len = len
                        .checked_sub(15 + 7)
                        .ok_or(Undecodable::Corrupt("match length below 22"))?;
                }
                len += 15;
            }
            len += 7;
        }
        len += 3;
        if offset > out.len() {
            return Err(Undecodable::Corrupt("match before the start"));
        }
        if len > cap - out.len() {
            return Err(Undecodable::Corrupt("longer than its declared size"));
        }
        let from = out.len() - offset;
        for i in 0..len {
            let b = out[from + i];
            out.push(b);
        }
    }
}

/// The plain bytes of one compressed value (its first byte names the scheme). `Ok(None)` for a
/// scrubbed value (ESE overwrote it: no data beyond its own bytes).
pub fn decompress(value: &[u8], cap: usize) -> Result<Option<Vec<u8>>, Undecodable> {
    let head = *value.first().ok_or(Undecodable::Corrupt("empty"))?;
    match head >> 3 {
        SCHEME_7BIT_ASCII => decompress_7bit(value, false).map(Some),
        SCHEME_7BIT_UNICODE => decompress_7bit(value, true).map(Some),
        SCHEME_XPRESS => {
            let size = u16_at(value, 1).ok_or(Undecodable::Corrupt("no size"))?;
            let out = decompress_lz77(&value[3..], usize::from(size).min(cap))?;
            if out.len() != usize::from(size) {
                return Err(Undecodable::Corrupt("shorter than its declared size"));
            }
            Ok(Some(out))
        }
        SCHEME_SCRUB => Ok(None),
        s => Err(Undecodable::Scheme(s)),
    }
}

/// What the walk saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueScan {
    pub trees: usize,
    pub pages: usize,
    pub records: usize,
    pub tagged: usize,
    pub compressed: usize,
    pub lv_chunks: usize,
    pub compressed_chunks: usize,
    /// Junctions of two consecutive chunks of one long value searched.
    pub junctions: usize,
    /// The first structure the walk could not follow (file offset, what), if any: the tree it
    /// was in was left there.
    pub structure: Option<(usize, &'static str)>,
}

/// A compressed value that stops the rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Decompressed, it holds the SID (at: file offset of the stored value).
    Sid { at: usize, scheme: u8 },
    /// It cannot be decompressed.
    Unreadable { at: usize, why: Undecodable },
    /// An encrypted value (its plain text cannot be known).
    Encrypted { at: usize },
    /// The SID's bytes run across the junction of two chunks of one long value: `lid`, the
    /// offset in the value of the second chunk, and the file offset of its stored bytes.
    SplitSid { lid: u64, offset: u32, at: usize },
}

type Fault = (usize, &'static str);

struct Node<'a> {
    at: usize,
    /// Node flags: 0x1 version, 0x2 deleted, 0x4 key prefix.
    flags: u8,
    key: Vec<u8>,
    data: &'a [u8],
    data_at: usize,
}

struct Chunk {
    lid: u64,
    offset: u32,
    at: usize,
    len: usize,
    data: std::ops::Range<usize>,
}

struct Walker<'a> {
    db: &'a [u8],
    page_size: usize,
    large: bool,
    map: Option<&'a SidMapping>,
    visited: Vec<bool>,
    scan: ValueScan,
    /// Every plain value, when asked for.
    plain: Option<Vec<PlainValue>>,
}

impl<'a> Walker<'a> {
    fn page(&mut self, pgno: u32) -> Result<(usize, &'a [u8]), Fault> {
        let index = usize::try_from(pgno)
            .ok()
            .and_then(|p| p.checked_add(1))
            .ok_or((0, "a page number out of range"))?;
        let at = index
            .checked_mul(self.page_size)
            .ok_or((0, "a page number out of range"))?;
        let page = at
            .checked_add(self.page_size)
            .and_then(|end| self.db.get(at..end))
            .ok_or((at, "a page beyond the end of the file"))?;
        let seen = self
            .visited
            .get_mut(index)
            .ok_or((at, "a page beyond the end of the file"))?;
        if *seen {
            return Err((at, "a page reached twice"));
        }
        *seen = true;
        self.scan.pages += 1;
        Ok((at, page))
    }

    /// The nodes of a page (tags 1..), keys with their prefix.
    fn nodes(&self, at: usize, page: &'a [u8]) -> Result<Vec<Node<'a>>, Fault> {
        let header = if self.large { 80 } else { 40 };
        let mask: u16 = if self.large { 0x7fff } else { 0x1fff };
        let count = usize::from(u16_at(page, PG_ITAG).unwrap_or(0) & 0x0fff);
        let tags_start = page
            .len()
            .checked_sub(count * 4)
            .filter(|&s| s >= header)
            .ok_or((at, "more tags than the page holds"))?;
        let tag = |i: usize| -> Result<(u8, &'a [u8], usize), Fault> {
            let t = page.len() - (i + 1) * 4;
            let cb = u16_at(page, t).unwrap_or(0);
            let ib = u16_at(page, t + 2).unwrap_or(0);
            let start = header + usize::from(ib & mask);
            let end = start + usize::from(cb & mask);
            let data = page
                .get(start..end)
                .filter(|_| end <= tags_start)
                .ok_or((at + t, "a tag outside its page"))?;
            let flags = if self.large {
                data.get(1).map_or(0, |b| b >> 5)
            } else {
                (ib >> 13) as u8
            };
            Ok((flags, data, at + start))
        };
        if count == 0 {
            return Ok(Vec::new());
        }
        // Tag 0 of a root page is the tree's space header, not a key prefix [dissect.esedb
        // `Page.key_prefix`]: a root page's node that claims a prefix is a fault.
        let root = u32_at(page, PG_FLAGS).unwrap_or(0) & PAGE_ROOT != 0;
        let prefix = if root { &[][..] } else { tag(0)?.1 };
        let mut out = Vec::with_capacity(count.saturating_sub(1));
        for i in 1..count {
            let (flags, data, data_at) = tag(i)?;
            let mut o = 0usize;
            let mut key = Vec::new();
            if flags & NODE_PREFIX != 0 {
                let n = usize::from(u16_at(data, 0).ok_or((data_at, "a short node"))? & 0x1fff);
                key.extend_from_slice(
                    prefix
                        .get(..n)
                        .ok_or((data_at, "a key prefix longer than the page's"))?,
                );
                o = 2;
            }
            let n = usize::from(u16_at(data, o).ok_or((data_at, "a short node"))? & 0x1fff);
            let suffix = data
                .get(o + 2..o + 2 + n)
                .ok_or((data_at, "a key longer than its node"))?;
            key.extend_from_slice(suffix);
            o += 2 + n;
            out.push(Node {
                at: data_at,
                flags,
                key,
                data: &data[o..],
                data_at: data_at + o,
            });
        }
        Ok(out)
    }

    /// The leaf pages of the tree at `root` (of object `objid` if known), each with its nodes.
    fn leaves(&mut self, root: u32) -> Result<Vec<(u32, Vec<Node<'a>>)>, Fault> {
        let mut out = Vec::new();
        let mut todo = vec![(root, 0usize)];
        let mut objid = None;
        while let Some((pgno, depth)) = todo.pop() {
            if depth > MAX_DEPTH {
                return Err((0, "a tree deeper than 16 levels"));
            }
            let (at, page) = self.page(pgno)?;
            let flags = u32_at(page, PG_FLAGS).unwrap_or(0);
            let id = u32_at(page, PG_OBJID).unwrap_or(0);
            if *objid.get_or_insert(id) != id {
                return Err((at, "a page of another tree"));
            }
            if flags & (PAGE_EMPTY | PAGE_SPACE_TREE | PAGE_INDEX) != 0 {
                return Err((at, "an empty, space-tree or index page inside a tree"));
            }
            let nodes = self.nodes(at, page)?;
            if flags & PAGE_LEAF != 0 {
                out.push((flags, nodes));
                continue;
            }
            for n in nodes.iter().rev() {
                let child = u32_at(n.data, 0).ok_or((n.at, "a branch node without a child"))?;
                todo.push((child, depth + 1));
            }
        }
        Ok(out)
    }

    /// The catalog's table and long-value roots, from its leaf nodes.
    fn roots(nodes: &[&Node<'a>]) -> Result<Vec<(u32, bool)>, Fault> {
        let mut roots = Vec::new();
        // A deleted record names a dropped table, whose pages may now belong to another tree.
        for n in nodes.iter().filter(|n| n.flags & NODE_DELETED == 0) {
            // Fixed columns: ObjidTable (4 bytes at 4), Type (2 at 8), Id (4 at 10),
            // ColtypOrPgnoFDP (4 at 14) [libesedb "Catalog"].
            if n.data.first().copied().unwrap_or(0) < 4 {
                return Err((n.at, "a catalog record without its fixed columns"));
            }
            let kind = u16_at(n.data, 8).ok_or((n.at, "a short catalog record"))?;
            let pgno = u32_at(n.data, 14).ok_or((n.at, "a short catalog record"))?;
            match kind {
                1 if pgno != CATALOG_ROOT => roots.push((pgno, false)),
                4 => roots.push((pgno, true)),
                _ => {}
            }
        }
        Ok(roots)
    }

    /// The records of the leaves of one table tree.
    fn table(&mut self, leaves: &[(u32, Vec<Node<'a>>)]) -> Result<Result<(), Finding>, Fault> {
        for (flags, nodes) in leaves {
            if flags & PAGE_LONG_VALUE != 0 {
                return Err((0, "a long-value page in a table"));
            }
            for n in nodes {
                if let Err(f) = self.record(n)? {
                    return Ok(Err(f));
                }
            }
        }
        Ok(Ok(()))
    }

    fn check(&mut self, plain: &[u8], at: usize, scheme: u8) -> Result<(), Finding> {
        if let Some(all) = &mut self.plain {
            all.push((at, scheme, plain.to_vec()));
        }
        match self.map {
            Some(map) if !map.find_all(plain, true).is_empty() => Err(Finding::Sid { at, scheme }),
            _ => Ok(()),
        }
    }

    /// One compressed value (the whole stored bytes, header first).
    fn value(&mut self, v: &[u8], at: usize, cap: usize) -> Result<(), Finding> {
        let scheme = v.first().map_or(0, |b| b >> 3);
        match decompress(v, cap) {
            Ok(Some(plain)) => self.check(&plain, at, scheme),
            Ok(None) => Ok(()),
            Err(why) => Err(Finding::Unreadable { at, why }),
        }
    }

    /// The tagged values of one record.
    fn record(&mut self, n: &Node<'a>) -> Result<Result<(), Finding>, Fault> {
        self.scan.records += 1;
        let d = n.data;
        let bad = |what| (n.data_at, what);
        if d.len() < 4 {
            return Ok(Ok(()));
        }
        let last_var = usize::from(d[1]);
        let fixed_end = usize::from(u16_at(d, 2).unwrap_or(0));
        let nvar = last_var.saturating_sub(127);
        let var_data = fixed_end + nvar * 2;
        if var_data > d.len() || fixed_end < 4 {
            return Err(bad("a record's variable columns outside it"));
        }
        let var_len = match nvar {
            0 => 0,
            _ => usize::from(u16_at(d, var_data - 2).unwrap_or(0) & 0x7fff),
        };
        let tagged = var_data + var_len;
        if tagged > d.len() {
            return Err(bad("a record's variable data outside it"));
        }
        if tagged + 4 > d.len() {
            return Ok(Ok(()));
        }
        let t = &d[tagged..];
        let large = self.large;
        let entry = |i: usize| -> Option<(usize, bool, bool)> {
            let raw = u16_at(t, i * 4 + 2)?;
            Some(if large {
                (usize::from(raw & 0x7fff), true, false)
            } else {
                (
                    usize::from(raw & 0x1fff),
                    raw & 0x4000 != 0,
                    raw & 0x2000 != 0,
                )
            })
        };
        let (first, _, _) = entry(0).ok_or(bad("a short tagged array"))?;
        let count = first / 4;
        if count == 0 || first % 4 != 0 || first > t.len() {
            return Err(bad("a tagged-value array outside its record"));
        }
        for i in 0..count {
            let (start, ext, null) = entry(i).ok_or(bad("a short tagged array"))?;
            let end = match i + 1 < count {
                true => entry(i + 1).ok_or(bad("a short tagged array"))?.0,
                false => t.len(),
            };
            if start > end || end > t.len() || start < first {
                return Err(bad("tagged values out of order"));
            }
            self.scan.tagged += 1;
            if !ext || null || start == end {
                continue;
            }
            let flags = t[start];
            let v = &t[start + 1..end];
            let v_at = n.data_at + tagged + start + 1;
            if flags & TV_NULL != 0 {
                continue;
            }
            if flags & TV_ENCRYPTED != 0 {
                return Ok(Err(Finding::Encrypted { at: v_at }));
            }
            if flags & TV_COMPRESSED == 0 || flags & TV_SEPARATED != 0 {
                continue;
            }
            self.scan.compressed += 1;
            // A multi-value: only its first instance is compressed [dissect.esedb record.py
            // `_parse_multivalue`]; the others are plain and seen by the byte search.
            let first_value = if flags & TV_TWO != 0 {
                let size = usize::from(*v.first().ok_or(bad("an empty two-value"))?);
                v.get(1..1 + size)
                    .ok_or(bad("a two-value longer than its data"))?
            } else if flags & TV_MULTI != 0 {
                let o0 = usize::from(u16_at(v, 0).ok_or(bad("a short multi-value"))? & 0x7fff);
                let o1 = match o0 {
                    2 => v.len(),
                    _ => usize::from(u16_at(v, 2).ok_or(bad("a short multi-value"))? & 0x7fff),
                };
                if u16_at(v, 0).unwrap_or(0) & 0x8000 != 0 {
                    continue; // a separated instance: its chunks are in the long-value tree
                }
                v.get(o0..o1).ok_or(bad("a multi-value outside its data"))?
            } else {
                v
            };
            if let Err(f) = self.value(first_value, v_at, MAX_PLAIN) {
                return Ok(Err(f));
            }
        }
        Ok(Ok(()))
    }

    /// The long-value tree at `root`.
    fn long_values(&mut self, root: u32) -> Result<Result<(), Finding>, Fault> {
        let mut sizes: std::collections::BTreeMap<u64, u64> = Default::default();
        let mut chunks: Vec<Chunk> = Vec::new();
        for (_, nodes) in self.leaves(root)? {
            for n in &nodes {
                let k = &n.key;
                let lid64 = k.first().is_some_and(|b| b & 0x80 != 0);
                let be = |r: std::ops::Range<usize>| {
                    k[r].iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
                };
                let (lid, offset) = match k.len() {
                    4 => (be(0..4), None),
                    8 if lid64 => (be(0..8), None),
                    8 => (be(0..4), Some(be(4..8))),
                    12 => (be(0..8), Some(be(8..12))),
                    _ => return Err((n.at, "a long-value key of an unknown length")),
                };
                match offset {
                    None => {
                        let size = u32_at(n.data, 4).ok_or((n.at, "a short long-value root"))?;
                        sizes.insert(lid, u64::from(size));
                    }
                    Some(offset) => chunks.push(Chunk {
                        lid,
                        offset: offset as u32,
                        at: n.data_at,
                        len: n.data.len(),
                        data: n.data_at..n.data_at + n.data.len(),
                    }),
                }
            }
        }
        chunks.sort_by_key(|c| (c.lid, c.offset));
        // The last plain bytes of the LV met so far, for the junction with its next chunk.
        let mut tail: Vec<u8> = Vec::with_capacity(JUNCTION_CONTEXT);
        for i in 0..chunks.len() {
            self.scan.lv_chunks += 1;
            let c = &chunks[i];
            let size = *sizes
                .get(&c.lid)
                .ok_or((c.at, "a long-value chunk without its root"))?;
            let (next, last) = match chunks.get(i + 1) {
                Some(n) if n.lid == c.lid => (u64::from(n.offset), false),
                _ => (size, true),
            };
            if i == 0 || chunks[i - 1].lid != c.lid {
                tail.clear(); // never join chunks of two values
            }
            let expected = next
                .checked_sub(u64::from(c.offset))
                .ok_or((c.at, "a long-value chunk beyond its value"))?;
            let expected = usize::try_from(expected).map_err(|_| (c.at, "a huge chunk"))?;
            let (lid, offset, at, range) = (c.lid, c.offset, c.at, c.data.clone());
            if c.len > expected {
                return Err((at, "a long-value chunk longer than its place"));
            }
            let stored = &self.db[range];
            if c.len == expected {
                if let Err(f) = self.junction(&mut tail, stored, last, (lid, offset, at)) {
                    return Ok(Err(f));
                }
                continue;
            }
            self.scan.compressed_chunks += 1;
            let scheme = stored.first().map_or(0, |b| b >> 3);
            match decompress(stored, expected) {
                Ok(Some(plain)) if plain.len() != expected => {
                    return Err((at, "a compressed chunk of the wrong plain size"))
                }
                Ok(Some(plain)) => {
                    if let Err(f) = self.check(&plain, at, scheme) {
                        return Ok(Err(f));
                    }
                    if let Err(f) = self.junction(&mut tail, &plain, last, (lid, offset, at)) {
                        return Ok(Err(f));
                    }
                }
                // Scrubbed: ESE overwrote it, no SID runs through it.
                Ok(None) => tail.clear(),
                Err(why) => return Ok(Err(Finding::Unreadable { at, why })),
            }
        }
        Ok(Ok(()))
    }

    /// The junction of an LV's plain bytes so far (`tail`, its last [`JUNCTION_CONTEXT`] bytes)
    /// with its next chunk's plain bytes `plain`: a SID form that starts before the junction
    /// and ends after it, or a string form that ends right at it (its following code unit, which
    /// decides whether it is the SID, is in the next chunk), is seen by neither the byte search
    /// nor the search of one chunk. `last`: `plain` is the value's last chunk. `tail` becomes the
    /// end of the bytes joined. `chunk`: the LID, offset and file offset of `plain`'s chunk.
    fn junction(
        &mut self,
        tail: &mut Vec<u8>,
        plain: &[u8],
        last: bool,
        chunk: (u64, u32, usize),
    ) -> Result<(), Finding> {
        let head = &plain[..plain.len().min(JUNCTION_CONTEXT)];
        let cut = tail.len();
        if cut > 0 {
            self.scan.junctions += 1;
        }
        tail.extend_from_slice(head);
        if let (Some(map), true) = (self.map, cut > 0) {
            let end_is_final = last && head.len() == plain.len();
            let split = map.find_all(tail, end_is_final).into_iter().any(|o| {
                let end = o.offset.saturating_add(o.len);
                o.offset < cut && (end > cut || (end == cut && o.form != Form::Binary))
            });
            if split {
                let (lid, offset, at) = chunk;
                return Err(Finding::SplitSid { lid, offset, at });
            }
        }
        // Keep the last bytes of the value: the joined bytes when the chunk was short, else the
        // chunk's own end.
        if head.len() < plain.len() {
            tail.clear();
            tail.extend_from_slice(&plain[plain.len() - JUNCTION_CONTEXT..]);
        } else if tail.len() > JUNCTION_CONTEXT {
            tail.drain(..tail.len() - JUNCTION_CONTEXT);
        }
        Ok(())
    }

    fn note(&mut self, fault: Fault) {
        self.scan.structure.get_or_insert(fault);
    }
}

/// Walks every table and long-value tree of the database (see the module documentation).
/// `Err` for the first compressed value that holds the SID or cannot be read; the scan counts
/// what was seen and the first structure the walk could not follow.
pub fn scan(db: &[u8], page_size: usize, map: &SidMapping) -> Result<ValueScan, Finding> {
    let mut w = Walker::new(db, page_size, Some(map));
    w.walk()?;
    Ok(w.scan)
}

/// A decompressed value: (file offset of the stored value, scheme, plain bytes).
pub type PlainValue = (usize, u8, Vec<u8>);

/// Every compressed value the walk decompresses, and what it saw: for tests and oracles. `Err`
/// for the first that cannot be read.
pub fn plain_values(db: &[u8], page_size: usize) -> Result<(Vec<PlainValue>, ValueScan), Finding> {
    let mut w = Walker::new(db, page_size, None);
    w.plain = Some(Vec::new());
    w.walk()?;
    Ok((w.plain.take().unwrap_or_default(), w.scan))
}

impl<'a> Walker<'a> {
    fn new(db: &'a [u8], page_size: usize, map: Option<&'a SidMapping>) -> Self {
        Walker {
            db,
            page_size,
            large: page_size > 8192,
            map,
            visited: vec![false; db.len() / page_size.max(1)],
            scan: ValueScan::default(),
            plain: None,
        }
    }

    /// The catalog, then every tree it names.
    fn walk(&mut self) -> Result<(), Finding> {
        let w = self;
        w.scan.trees += 1;
        let catalog = match w.leaves(CATALOG_ROOT) {
            Ok(leaves) => leaves,
            Err(f) => {
                w.note(f);
                return Ok(());
            }
        };
        let roots = {
            let all: Vec<&Node> = catalog.iter().flat_map(|(_, n)| n.iter()).collect();
            Walker::roots(&all)
        };
        let mut outcomes = vec![w.table(&catalog)];
        match roots {
            Ok(roots) => {
                for (root, lv) in roots {
                    w.scan.trees += 1;
                    outcomes.push(if lv {
                        w.long_values(root)
                    } else {
                        w.leaves(root).and_then(|leaves| w.table(&leaves))
                    });
                }
            }
            Err(f) => w.note(f),
        }
        for outcome in outcomes {
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(finding)) => return Err(finding),
                Err(fault) => w.note(fault),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
