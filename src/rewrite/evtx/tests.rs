//! Tests of [`rewrite_evtx`] on event logs built here, field by field, from the format description
//! [libevtx EVTX documentation; python-evtx], with python-evtx as an independent oracle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::rewrite::mapping::Form;
use crate::sid::MachineSid;

const OLD: (u32, u32, u32) = (4070822719, 3404542230, 2541167049);
const NEW: (u32, u32, u32) = (4111111111, 3222222222, 2333333333);
/// Another domain's SID: never touched.
const OTHER: &str = "S-1-5-21-1111111111-2222222222-3333333333-1104";

fn old() -> MachineSid {
    MachineSid::new(OLD.0, OLD.1, OLD.2)
}

fn new_sid() -> MachineSid {
    MachineSid::new(NEW.0, NEW.1, NEW.2)
}

fn mapping() -> SidMapping {
    SidMapping::new(old(), new_sid()).unwrap()
}

/// Binary XML value types [libevtx "Value types"].
const TYPE_WSTRING: u8 = 0x01;
const TYPE_UINT16: u8 = 0x06;
const TYPE_SID: u8 = 0x13;

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A binary SID (revision 1, NT authority) from its string form.
fn binary_sid(s: &str) -> Vec<u8> {
    let subs: Vec<u32> = s
        .strip_prefix("S-1-5-")
        .unwrap()
        .split('-')
        .map(|p| p.parse().unwrap())
        .collect();
    let mut b = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, 5];
    for sub in subs {
        b.extend_from_slice(&sub.to_le_bytes());
    }
    b
}

/// The name hash of the binary XML name strings [libevtx: "hash = hash * 65599 + character",
/// the low 16 bits stored].
fn name_hash(name: &str) -> u16 {
    name.encode_utf16().fold(0u32, |h, c| {
        h.wrapping_mul(65599).wrapping_add(u32::from(c))
    }) as u16
}

/// Writes one chunk: header tables, records with binary XML, checksums.
struct ChunkWriter {
    c: Vec<u8>,
    names: HashMap<String, u32>,
    first_id: Option<u64>,
    last_id: u64,
    last_record: usize,
}

impl ChunkWriter {
    fn new() -> Self {
        ChunkWriter {
            c: vec![0; CHUNK_RECORDS_START],
            names: HashMap::new(),
            first_id: None,
            last_id: 0,
            last_record: 0,
        }
    }

    fn u8(&mut self, v: u8) {
        self.c.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.c.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.c.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.c.extend_from_slice(&v.to_le_bytes());
    }
    fn pos(&self) -> u32 {
        self.c.len() as u32
    }
    fn patch_u32(&mut self, at: usize, v: u32) {
        self.c[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A name offset; the name string itself follows inline on first use and is entered in the
    /// chunk's string table (bucket = hash % 64) [libevtx "Name"].
    fn name(&mut self, name: &str) {
        if let Some(&at) = self.names.get(name) {
            self.u32(at);
            return;
        }
        let at = self.pos() + 4;
        self.u32(at);
        let hash = name_hash(name);
        let bucket = 0x80 + 4 * usize::from(hash % 64);
        let next = u32_at(&self.c, bucket).unwrap();
        self.u32(next);
        self.u16(hash);
        self.u16(name.encode_utf16().count() as u16);
        self.c.extend_from_slice(&utf16(name));
        self.u16(0);
        self.patch_u32(bucket, at);
        self.names.insert(name.to_string(), at);
    }

    /// An element: open start tag, attributes (name, substitution index and type, or a literal
    /// string), then the content, then the end tag.
    fn element(&mut self, name: &str, attrs: &[(&str, Content)], content: &[Content]) {
        let has_attrs = !attrs.is_empty();
        self.u8(if has_attrs { 0x41 } else { 0x01 });
        self.u16(0xFFFF); // dependency identifier: none
        let size_at = self.c.len();
        self.u32(0);
        self.name(name);
        let mut attr_size_at = None;
        if has_attrs {
            attr_size_at = Some(self.c.len());
            self.u32(0);
        }
        for (i, (attr, value)) in attrs.iter().enumerate() {
            self.u8(if i + 1 < attrs.len() { 0x46 } else { 0x06 });
            self.name(attr);
            self.content(value);
        }
        if let Some(at) = attr_size_at {
            let size = self.c.len() - at - 4;
            self.patch_u32(at, size as u32);
        }
        if content.is_empty() {
            self.u8(0x03); // close empty element
        } else {
            self.u8(0x02); // close start element
            for item in content {
                self.content(item);
            }
            self.u8(0x04); // end element
        }
        let size = self.c.len() - size_at - 4;
        self.patch_u32(size_at, size as u32);
    }

    fn content(&mut self, item: &Content) {
        match item {
            Content::Sub(index, ty) => {
                self.u8(0x0D);
                self.u16(*index);
                self.u8(*ty);
            }
            Content::Text(s) => {
                self.u8(0x05);
                self.u8(TYPE_WSTRING);
                self.u16(s.encode_utf16().count() as u16);
                self.c.extend_from_slice(&utf16(s));
            }
            Content::Element(name, attrs, children) => self.element(name, attrs, children),
        }
    }

    /// One record whose binary XML is a template instance: with the template defined inline
    /// (`Some(body)`, returns the definition's offset) or referring to `template`.
    fn record(
        &mut self,
        id: u64,
        template: Result<&Content, u32>,
        values: &[(u8, Vec<u8>)],
    ) -> u32 {
        let start = self.c.len();
        self.c.extend_from_slice(&[0x2a, 0x2a, 0, 0]);
        self.u32(0);
        self.u64(id);
        self.u64(0x01DA_0000_0000_0000 + id); // written FILETIME
        self.c.extend_from_slice(&[0x0F, 0x01, 0x01, 0x00]); // fragment header
        self.u8(0x0C); // template instance
        self.u8(0x01);
        let template_id = 0x5D1F_0001;
        self.u32(template_id);
        let definition = match template {
            Err(at) => {
                self.u32(at);
                at
            }
            Ok(body) => {
                let at = self.pos() + 4;
                self.u32(at);
                let slot = 0x180 + 4 * (template_id as usize % 32);
                let next = u32_at(&self.c, slot).unwrap();
                self.u32(next);
                self.u32(template_id); // the GUID's first four bytes
                self.c.extend_from_slice(&[0x11; 12]);
                let size_at = self.c.len();
                self.u32(0);
                self.c.extend_from_slice(&[0x0F, 0x01, 0x01, 0x00]);
                self.content(body);
                self.u8(0x00); // end of fragment
                let size = self.c.len() - size_at - 4;
                self.patch_u32(size_at, size as u32);
                self.patch_u32(slot, at);
                at
            }
        };
        self.u32(values.len() as u32);
        for (ty, v) in values {
            self.u16(v.len() as u16);
            self.u8(*ty);
            self.u8(0);
        }
        for (_, v) in values {
            self.c.extend_from_slice(v);
        }
        let size = (self.c.len() + 4 - start) as u32;
        self.u32(size);
        self.patch_u32(start + 4, size);
        self.first_id.get_or_insert(id);
        self.last_id = id;
        self.last_record = start;
        definition
    }

    /// The finished 64 KiB chunk with both checksums computed as the format says.
    fn finish(mut self) -> Vec<u8> {
        let free = self.c.len();
        assert!(free <= CHUNK_SIZE);
        self.c.resize(CHUNK_SIZE, 0);
        let c = &mut self.c;
        c[..8].copy_from_slice(CHUNK_SIGNATURE);
        let first = self.first_id.unwrap_or(0);
        for (at, v) in [
            (0x08, first),
            (0x10, self.last_id),
            (0x18, first),
            (0x20, self.last_id),
        ] {
            c[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        put_u32(c, 0x28, 0x80);
        put_u32(c, 0x2C, self.last_record as u32);
        put_u32(c, CHUNK_FREE_SPACE, free as u32);
        let records = crc32(&c[CHUNK_RECORDS_START..free]);
        put_u32(c, CHUNK_RECORDS_CHECKSUM, records);
        let mut covered = c[..0x78].to_vec();
        covered.extend_from_slice(&c[0x80..0x200]);
        put_u32(c, CHUNK_HEADER_CHECKSUM, crc32(&covered));
        self.c
    }
}

#[derive(Clone)]
enum Content {
    Sub(u16, u8),
    Text(String),
    Element(String, Vec<(&'static str, Content)>, Vec<Content>),
}

fn el(name: &str, attrs: Vec<(&'static str, Content)>, children: Vec<Content>) -> Content {
    Content::Element(name.to_string(), attrs, children)
}

/// The template of every record: a Security-log-like event whose SIDs are SidType substitutions
/// (an attribute and an element), UTF-16 string substitutions, and a literal in the template.
fn template(literal_sid: &str) -> Content {
    let data = |name: &'static str, content: Content| {
        el(
            "Data",
            vec![("Name", Content::Text(name.into()))],
            vec![content],
        )
    };
    el(
        "Event",
        vec![],
        vec![
            el(
                "System",
                vec![],
                vec![
                    el("EventID", vec![], vec![Content::Sub(0, TYPE_UINT16)]),
                    el(
                        "Security",
                        vec![("UserID", Content::Sub(1, TYPE_SID))],
                        vec![],
                    ),
                ],
            ),
            el(
                "EventData",
                vec![],
                vec![
                    data("TargetUserSid", Content::Sub(2, TYPE_SID)),
                    data("TargetUserName", Content::Sub(3, TYPE_WSTRING)),
                    data("SidText", Content::Sub(4, TYPE_WSTRING)),
                    data("Literal", Content::Text(literal_sid.to_string())),
                ],
            ),
        ],
    )
}

fn values(event: u16, user: &str, target: &str, name: &str, text: &str) -> Vec<(u8, Vec<u8>)> {
    vec![
        (TYPE_UINT16, event.to_le_bytes().to_vec()),
        (TYPE_SID, binary_sid(user)),
        (TYPE_SID, binary_sid(target)),
        (TYPE_WSTRING, utf16(name)),
        (TYPE_WSTRING, utf16(text)),
    ]
}

fn account(rid: u32) -> String {
    format!("{}-{rid}", old())
}

/// Chunk 0: two records with the machine SID (the first defines the template inline, with the
/// SID as a literal; the second refers to it) and one without. Chunk 1: one record, no machine
/// SID, its own template definition (templates are per chunk).
fn build_log() -> Vec<u8> {
    let literal = format!("{} (the machine)", old());
    let body = template(&literal);
    let mut c0 = ChunkWriter::new();
    let def = c0.record(
        1,
        Ok(&body),
        &values(
            4624,
            &account(1001),
            &account(500),
            "Student",
            &format!("{};", account(1001)),
        ),
    );
    c0.record(
        2,
        Err(def),
        &values(4672, "S-1-5-18", &account(1001), "SYSTEM", "S-1-5-18"),
    );
    c0.record(
        3,
        Err(def),
        &values(4625, OTHER, OTHER, "bperry", "no machine SID here"),
    );
    let other_body = template("S-1-5-32-544");
    let mut c1 = ChunkWriter::new();
    c1.record(
        4,
        Ok(&other_body),
        &values(4634, OTHER, "S-1-5-19", "LOCAL SERVICE", OTHER),
    );
    file(&[c0.finish(), c1.finish()], 5)
}

/// A file header for `chunks` followed by the chunks [libevtx "File header"].
fn file(chunks: &[Vec<u8>], next_record: u64) -> Vec<u8> {
    let mut h = vec![0u8; FILE_HEADER_BLOCK];
    h[..8].copy_from_slice(FILE_SIGNATURE);
    h[0x10..0x18].copy_from_slice(&(chunks.len() as u64 - 1).to_le_bytes()); // last chunk
    h[0x18..0x20].copy_from_slice(&next_record.to_le_bytes());
    h[0x20..0x24].copy_from_slice(&0x80u32.to_le_bytes()); // header size
    h[0x24..0x26].copy_from_slice(&1u16.to_le_bytes()); // minor version
    h[0x26..0x28].copy_from_slice(&3u16.to_le_bytes()); // major version
    h[0x28..0x2A].copy_from_slice(&(FILE_HEADER_BLOCK as u16).to_le_bytes());
    h[0x2A..0x2C].copy_from_slice(&(chunks.len() as u16).to_le_bytes());
    let crc = crc32(&h[..0x78]);
    put_u32(&mut h, FILE_CHECKSUM, crc);
    for c in chunks {
        h.extend_from_slice(c);
    }
    h
}

/// Our own check of every checksum: (file header ok, per chunk (records ok, header ok)).
fn checksums(f: &[u8]) -> (bool, Vec<(bool, bool)>) {
    let file_ok = u32_at(f, FILE_CHECKSUM) == Some(file_header_checksum(f));
    let chunks = f[FILE_HEADER_BLOCK..]
        .chunks_exact(CHUNK_SIZE)
        .filter(|c| &c[..8] == CHUNK_SIGNATURE)
        .map(|c| {
            (
                chunk_records_checksum(c) == u32_at(c, CHUNK_RECORDS_CHECKSUM),
                Some(chunk_header_checksum(c)) == u32_at(c, CHUNK_HEADER_CHECKSUM),
            )
        })
        .collect();
    (file_ok, chunks)
}

/// Every byte that differs between master and clone lies in an occurrence of the old SID or in
/// one of the listed checksum fields.
fn assert_only_sids_and(master: &[u8], clone: &[u8], crc_fields: &[usize]) {
    let occs = mapping().find_all(master, true);
    for (i, (a, b)) in master.iter().zip(clone).enumerate() {
        if a == b {
            continue;
        }
        let in_sid = occs
            .iter()
            .any(|o| (o.offset..o.offset + o.len).contains(&i));
        let in_crc = crc_fields.iter().any(|f| (*f..*f + 4).contains(&i));
        assert!(
            in_sid || in_crc,
            "byte {i:#x} changed outside SIDs and CRCs"
        );
    }
}

/// Prove that the SID is replaced in every form (SidType values, UTF-16 substitutions, a literal
/// in the template), that the changed chunk's checksums are recomputed and valid, that the
/// unchanged chunk and the file header are byte-identical, and that nothing else changed.
#[test]
fn rewrites_sids_and_recomputes_the_changed_chunks_checksums() {
    let master = build_log();
    assert_eq!(checksums(&master), (true, vec![(true, true), (true, true)]));
    let map = mapping();
    assert!(!map.find_all(&master, true).is_empty());
    let out = rewrite_evtx(&master, &map).unwrap();
    let clone = &out.bytes;
    assert_eq!(clone.len(), master.len());
    assert_eq!(checksums(clone), (true, vec![(true, true), (true, true)]));
    assert!(map.find_all(clone, true).is_empty(), "old SID left");

    let r = &out.report;
    // Record 1: UserID, TargetUserSid (binary), SidText (UTF-16); record 2: TargetUserSid; the
    // literal in the template (UTF-16).
    assert_eq!(r.replaced.get(Form::Binary), 3);
    assert_eq!(r.replaced.get(Form::Utf16), 2);
    assert_eq!(r.replaced.get(Form::Ascii), 0);
    assert_eq!(
        (r.chunks, r.chunks_changed, r.blocks_without_signature),
        (2, 1, 0)
    );
    assert_eq!(
        (r.records_checksums_updated, r.header_checksums_updated),
        (1, 1)
    );
    assert!(!r.file_checksum_updated);
    assert!(r.stale_checksums.is_empty() && r.unreadable_chunks.is_empty());

    let c0 = FILE_HEADER_BLOCK;
    let c1 = c0 + CHUNK_SIZE;
    assert_ne!(
        clone[c0 + CHUNK_RECORDS_CHECKSUM..c0 + CHUNK_RECORDS_CHECKSUM + 4],
        master[c0 + CHUNK_RECORDS_CHECKSUM..c0 + CHUNK_RECORDS_CHECKSUM + 4]
    );
    assert_eq!(clone[..c0], master[..c0], "file header changed");
    assert_eq!(clone[c1..], master[c1..], "chunk without the SID changed");
    assert_only_sids_and(
        &master,
        clone,
        &[c0 + CHUNK_RECORDS_CHECKSUM, c0 + CHUNK_HEADER_CHECKSUM],
    );
    let new = new_sid();
    let n = |needle: &[u8]| clone.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(n(&new.binary_pattern()), 3);
    assert_eq!(n(&new.utf16le()), 2);
    // Other domains' SIDs and well-known SIDs are untouched.
    let other = binary_sid(OTHER);
    let m = |needle: &[u8]| {
        master
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    };
    assert_eq!(n(&other), m(&other));
    assert!(m(&other) > 0);
}

/// Prove that a checksum already wrong in the master stays exactly as it was (and is reported),
/// while the valid ones of the same chunk are recomputed.
#[test]
fn leaves_a_checksum_that_was_wrong_in_the_master() {
    let mut master = build_log();
    let at = FILE_HEADER_BLOCK + CHUNK_RECORDS_CHECKSUM;
    master[at] ^= 0xFF;
    // Re-seal the header so that only the records CRC is wrong.
    let chunk = FILE_HEADER_BLOCK..FILE_HEADER_BLOCK + CHUNK_SIZE;
    let h = chunk_header_checksum(&master[chunk.clone()]);
    put_u32(&mut master, FILE_HEADER_BLOCK + CHUNK_HEADER_CHECKSUM, h);
    assert_eq!(checksums(&master).1[0], (false, true));

    let out = rewrite_evtx(&master, &mapping()).unwrap();
    assert_eq!(out.bytes[at..at + 4], master[at..at + 4]);
    assert_eq!(checksums(&out.bytes).1, vec![(false, true), (true, true)]);
    assert_eq!(out.report.stale_checksums.len(), 1);
    let stale = &out.report.stale_checksums[0];
    assert_eq!((stale.at, stale.which), (at, Checksum::ChunkRecords));
    assert_eq!(stale.stored, u32_at(&master, at).unwrap());
    assert!(mapping().find_all(&out.bytes, true).is_empty());

    // A wrong header CRC: the records CRC is recomputed, the header CRC left.
    let mut master = build_log();
    let hat = FILE_HEADER_BLOCK + CHUNK_HEADER_CHECKSUM;
    master[hat + 1] ^= 0x55;
    let out = rewrite_evtx(&master, &mapping()).unwrap();
    assert_eq!(out.bytes[hat..hat + 4], master[hat..hat + 4]);
    assert_eq!(checksums(&out.bytes).1[0], (true, false));
    assert_eq!(out.report.records_checksums_updated, 1);
    assert_eq!(out.report.stale_checksums[0].which, Checksum::ChunkHeader);
}

/// Prove that a SID in the checksummed part of the file header gets a new file header CRC, and
/// that a wrong file header CRC is left alone.
#[test]
fn file_header_checksum_follows_a_changed_header() {
    let mut master = build_log();
    master[0x40..0x4C].copy_from_slice(&old().binary_pattern());
    let crc = file_header_checksum(&master);
    put_u32(&mut master, FILE_CHECKSUM, crc);
    let out = rewrite_evtx(&master, &mapping()).unwrap();
    assert!(out.report.file_checksum_updated);
    assert!(checksums(&out.bytes).0);
    assert_eq!(out.bytes[0x40..0x4C], new_sid().binary_pattern());

    master[FILE_CHECKSUM] ^= 1;
    let out = rewrite_evtx(&master, &mapping()).unwrap();
    assert!(!out.report.file_checksum_updated);
    assert_eq!(
        out.bytes[FILE_CHECKSUM..FILE_CHECKSUM + 4],
        master[FILE_CHECKSUM..FILE_CHECKSUM + 4]
    );
    assert_eq!(out.report.stale_checksums[0].which, Checksum::FileHeader);
}

/// Prove that a log without the SID comes back byte-identical, and that unused blocks and
/// trailing bytes are counted, not checksummed.
#[test]
fn a_log_without_the_sid_is_unchanged() {
    let mut c = ChunkWriter::new();
    c.record(
        1,
        Ok(&template("S-1-5-18")),
        &values(1, OTHER, OTHER, "x", "y"),
    );
    let mut master = file(&[c.finish(), vec![0; CHUNK_SIZE]], 2);
    master.extend_from_slice(&[0; 100]);
    let out = rewrite_evtx(&master, &mapping()).unwrap();
    assert_eq!(out.bytes, master);
    let r = &out.report;
    assert_eq!(
        (r.chunks, r.blocks_without_signature, r.trailing_bytes),
        (1, 1, 100)
    );
    assert_eq!(r.chunks_changed, 0);
}

/// Prove that damaged input is an error or is rewritten without touching checksums, never a
/// panic: short files, a wrong signature, a wrong header block size, out-of-range free-space
/// offsets, and random corruption of every kind.
#[test]
fn damaged_input_is_an_error_or_left_alone_never_a_panic() {
    let map = mapping();
    let master = build_log();
    assert_eq!(
        rewrite_evtx(&master[..100], &map).unwrap_err(),
        EvtxError::Truncated { len: 100 }
    );
    let mut bad = master.clone();
    bad[0] = b'X';
    assert!(matches!(
        rewrite_evtx(&bad, &map),
        Err(EvtxError::NotEvtx { .. })
    ));
    let mut bad = master.clone();
    bad[FILE_HEADER_BLOCK_SIZE + 1] = 0x20;
    assert!(matches!(
        rewrite_evtx(&bad, &map),
        Err(EvtxError::HeaderBlockSize { .. })
    ));
    for free in [0u32, 0x1FF, 0x1_0001, u32::MAX] {
        let mut bad = master.clone();
        put_u32(&mut bad, FILE_HEADER_BLOCK + CHUNK_FREE_SPACE, free);
        let out = rewrite_evtx(&bad, &map).unwrap();
        assert_eq!(out.report.unreadable_chunks.len(), 1);
        assert_eq!(out.report.unreadable_chunks[0].free_space_offset, free);
        let crc = FILE_HEADER_BLOCK + CHUNK_RECORDS_CHECKSUM;
        assert_eq!(out.bytes[crc..crc + 4], bad[crc..crc + 4]);
        assert!(map.find_all(&out.bytes, true).is_empty());
    }
    // Truncated in the middle of a chunk: the partial chunk is trailing bytes.
    let cut = &master[..FILE_HEADER_BLOCK + CHUNK_SIZE + 1000];
    let out = rewrite_evtx(cut, &map).unwrap();
    assert_eq!((out.report.chunks, out.report.trailing_bytes), (1, 1000));
    // Random corruption: xorshift-chosen bytes of the headers and records.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut bad = master.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = next() as u8;
        }
        let len = if next() % 4 == 0 {
            (next() % bad.len() as u64) as usize
        } else {
            bad.len()
        };
        if let Ok(out) = rewrite_evtx(&bad[..len], &map) {
            assert_eq!(out.bytes.len(), len);
        }
    }
}

/// Where python-evtx can be run: /usr/bin/python3 with Debian's python3-evtx (scripts/setup-deps).
/// Without it the oracle tests skip, unless tools are required (CI, SIDFS_REQUIRE_TOOLS).
fn python_evtx() -> bool {
    let found = Command::new("/usr/bin/python3")
        .args(["-c", "import Evtx.Evtx"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("SIDFS_REQUIRE_TOOLS").is_some();
        assert!(
            !required,
            "python-evtx is not installed for /usr/bin/python3 (run scripts/setup-deps)"
        );
        eprintln!("SKIP: python-evtx is not installed (run scripts/setup-deps)");
    }
    found
}

/// `scripts/evtx-oracle` on files: one JSON description each.
pub(crate) fn oracle(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/evtx-oracle");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "evtx-oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("sidfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Independent oracle: python-evtx finds every checksum of master and clone valid, renders the
/// master's records with the old SID (so the built log is what we think it is), and renders the
/// clone's records as exactly the master's XML with the SID text replaced.
#[test]
fn python_evtx_verifies_master_and_clone_and_sees_only_the_new_sid() {
    if !python_evtx() {
        return;
    }
    let dir = TempDir::new("evtx-oracle");
    let master = build_log();
    let clone = rewrite_evtx(&master, &mapping()).unwrap().bytes;
    let mp = dir.path().join("master.evtx");
    let cp = dir.path().join("clone.evtx");
    std::fs::write(&mp, &master).unwrap();
    std::fs::write(&cp, &clone).unwrap();
    let d = oracle(&[mp, cp]);
    for f in &d {
        assert_eq!(f["file_header_ok"], true, "{f}");
        let chunks = f["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 2);
        for c in chunks {
            assert_eq!(c["verify"], true, "{f}");
        }
        assert_eq!(f["records"].as_array().unwrap().len(), 4);
    }
    let (old_s, new_s) = (old().to_string(), new_sid().to_string());
    let master_xml: Vec<&str> = d[0]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let clone_xml: Vec<&str> = d[1]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(master_xml[0].contains(&format!("UserID=\"{old_s}-1001\"")));
    assert!(master_xml[0].contains(&format!("{old_s}-500</Data>")));
    assert!(master_xml[0].contains(&format!("{old_s} (the machine)")));
    for (m, c) in master_xml.iter().zip(&clone_xml) {
        assert_eq!(*c, m.replace(&old_s, &new_s));
        assert!(!c.contains(&old_s));
    }
    assert!(clone_xml[0].contains(&format!("UserID=\"{new_s}-1001\"")));
    assert!(clone_xml[3].contains(OTHER));
}
