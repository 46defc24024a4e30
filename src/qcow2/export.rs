//! `sidfs export --format qcow2`: the clone as a qcow2 overlay whose backing file is the master.
//! It reads the clone through exactly the code the mount serves and compares it with the master
//! cluster by cluster; only the clusters that differ (and, for an existing clone, the clusters
//! its delta holds a block of) go into the overlay, so qemu reads everything else straight from
//! the master, with no sidfs process.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use super::{OverlayWriter, CLUSTER_SIZE, MAX_BACKING_NAME};
use crate::export::{ExportError, ExportRequest, ExportSummary, PartialOutput};
use crate::mount::MountError;
use crate::overlay::{BlockIndex, CloneDisk, OverlayError};
use crate::rewrite::sid_ranges;
use crate::rewrite::stage::SidPatchStage;
use crate::rewrite::survey_cache::{SidRanges, SurveyCache};

/// qemu's sector: a qcow2 disk's size is a multiple of it.
const SECTOR: u64 = 512;
/// Bytes compared per step: a whole number of clusters.
const CHUNK: usize = 64 * CLUSTER_SIZE as usize;

fn fail<T>(e: ExportError) -> Result<T, MountError> {
    Err(e.into())
}

/// Writes the clone `disk` of `req.clone.master` to `req.out` as a qcow2 overlay. The caller
/// has checked the request (an existing output needs `--force`) and opened the clone.
///
/// A fresh clone of a master whose survey cache knows where the master holds the old SID
/// (`rewrite::sid_ranges`) compares only where the clone can differ; otherwise the whole disk is
/// compared, and the master's SID places are found and cached for the next clone.
pub fn write_overlay(
    req: &ExportRequest,
    disk: &CloneDisk,
    stage: Option<&SidPatchStage>,
    cache: &mut SurveyCache,
) -> Result<ExportSummary, MountError> {
    let master = &req.clone.master;
    let out = &req.out;
    refuse_output(master, out)?;
    let backing = backing_name(master, out)?;
    let size = disk.size();
    // qemu counts a qcow2 disk in 512-byte sectors and drops a partial last one: such a disk
    // would read shorter than the clone.
    if !size.is_multiple_of(SECTOR) {
        return fail(ExportError::NotWholeSectors {
            master: master.clone(),
            size,
        });
    }

    let (file, partial) = PartialOutput::create(out)?;
    let qerr = |source| {
        MountError::from(ExportError::Qcow2Write {
            out: out.clone(),
            source,
        })
    };
    let mut writer =
        OverlayWriter::new(&file, size, backing.as_os_str().as_bytes()).map_err(qerr)?;

    let started = Instant::now();
    let err = MountError::Overlay;
    // Only a fresh clone: an existing one's delta may hold the guest's writes anywhere.
    let fresh_stage = stage.filter(|_| req.state.is_none());
    let old_sid = fresh_stage.map(|s| s.mapping().old().to_string());
    let cached = match (&cache.facts.sid_ranges, fresh_stage) {
        (Some(r), Some(stage)) if Some(&r.old_sid) == old_sid.as_ref() => {
            let only = sid_ranges::may_differ(stage, disk.master(), &r.ranges).map_err(err)?;
            let bytes: u64 = only.iter().map(|(s, e)| e - s).sum();
            log::info!(
                "survey cache: comparing {} ranges ({} KiB) where the clone can differ, not the whole disk",
                only.len(),
                bytes >> 10
            );
            Some(only)
        }
        _ => None,
    };
    let data_bytes = walk_differences(disk, req.state.is_some(), &mut writer, cached.as_deref())?;
    let layout = writer.finish().map_err(qerr)?;

    partial.commit(out)?;
    if let (None, Some(stage), Some(old_sid), Some(_)) =
        (&cached, fresh_stage, old_sid, cache.path())
    {
        let scanned = Instant::now();
        let ranges = sid_ranges::scan(disk.master(), stage.mapping()).map_err(err)?;
        log::info!(
            "found the master's SID places ({} ranges) in {:?}",
            ranges.len(),
            scanned.elapsed()
        );
        cache.facts.sid_ranges = Some(SidRanges { old_sid, ranges });
        cache.store();
    }
    Ok(ExportSummary {
        out: out.clone(),
        disk_size: size,
        data_bytes,
        written_bytes: layout.data_clusters * CLUSTER_SIZE,
        seconds: started.elapsed().as_secs_f64(),
        old_sid: None,
        new_sid: None,
    })
}

/// Compares the clone with its master over every data extent, cluster by cluster, and gives the
/// writer each cluster that differs (or that the delta holds a block of, when `with_delta`).
/// Returns the bytes compared. The holes of the clone are holes of the master too, so they read
/// zeros on both sides and never differ.
fn walk_differences(
    disk: &CloneDisk,
    with_delta: bool,
    writer: &mut OverlayWriter<'_>,
    only: Option<&[(u64, u64)]>,
) -> Result<u64, MountError> {
    let err = MountError::Overlay;
    let qerr = |e| MountError::from(ExportError::Qcow2(e));
    let size = disk.size();
    let geometry = disk.geometry();
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut reported = false;
    let mut clone_buf = vec![0u8; CHUNK];
    let mut master_buf = vec![0u8; CHUNK];
    let mut compared = 0u64;
    let mut pos = 0u64;
    let mut extents = DataExtents::new(disk);
    let mut ranges = only.map(|r| r.iter());
    loop {
        let next = match &mut ranges {
            Some(it) => it.next().copied(),
            None => extents.next_from(pos).map_err(err)?,
        };
        let Some((data, hole)) = next else {
            break;
        };
        if hole <= pos {
            continue;
        }
        // Whole clusters around the extent; `pos` is where the previous extent's clusters end.
        let mut at = (data - data % CLUSTER_SIZE).max(pos);
        let end = hole
            .div_ceil(CLUSTER_SIZE)
            .saturating_mul(CLUSTER_SIZE)
            .min(size);
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            disk.read(at, &mut clone_buf[..n]).map_err(err)?;
            disk.master()
                .read_at(at, &mut master_buf[..n])
                .map_err(err)?;
            for (i, (ours, theirs)) in clone_buf[..n]
                .chunks(CLUSTER_SIZE as usize)
                .zip(master_buf[..n].chunks(CLUSTER_SIZE as usize))
                .enumerate()
            {
                let start = at + (i as u64) * CLUSTER_SIZE;
                let cluster = start / CLUSTER_SIZE;
                let held = with_delta && {
                    let first = geometry.block_of(start);
                    let last = geometry.block_of(start + ours.len() as u64 - 1);
                    disk.delta()
                        .next_with(first, BlockIndex(last.0 + 1), true)
                        .is_some()
                };
                if !held && ours == theirs {
                    continue;
                }
                if ours.iter().all(|&b| b == 0) {
                    writer.zero(cluster).map_err(qerr)?;
                } else {
                    writer.data(cluster, ours).map_err(qerr)?;
                }
            }
            at += n as u64;
            compared += n as u64;
            if progress && last_report.elapsed().as_millis() >= 500 {
                last_report = Instant::now();
                reported = true;
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                eprint!(
                    "\rsidfs export: {:>6.1}% of the disk, {:.0} MB/s   ",
                    at as f64 * 100.0 / size.max(1) as f64,
                    compared as f64 / secs / 1e6
                );
                let _ = std::io::stderr().flush();
            }
        }
        pos = end.max(hole);
        if pos >= size {
            break;
        }
    }
    if reported {
        eprintln!();
    }
    Ok(compared)
}

/// The clone's data extents (the master's data and the delta's blocks, as `CloneDisk::seek_data`
/// defines them), found with one pass over the delta's map instead of a scan from each extent to
/// the end of the map: on a big disk with scattered data that scan was most of the export's
/// time.
struct DataExtents<'a> {
    disk: &'a CloneDisk,
    limit: BlockIndex,
    /// The first delta block at or after the last position asked about, if any.
    next_delta: Option<BlockIndex>,
    asked: u64,
}

impl<'a> DataExtents<'a> {
    fn new(disk: &'a CloneDisk) -> Self {
        let limit = BlockIndex(disk.geometry().block_count());
        let next_delta = disk.delta().next_with(BlockIndex(0), limit, true);
        DataExtents {
            disk,
            limit,
            next_delta,
            asked: 0,
        }
    }

    /// The first extent `[start, end)` of data with `start >= pos`: data from the start to the
    /// end (a hole of the master, or the end of a run of delta blocks). Positions only grow.
    fn next_from(&mut self, pos: u64) -> Result<Option<(u64, u64)>, OverlayError> {
        let size = self.disk.size();
        if pos >= size {
            return Ok(None);
        }
        let g = self.disk.geometry();
        let delta = self.disk.delta();
        if pos > self.asked {
            self.asked = pos;
            if self
                .next_delta
                .is_some_and(|b| g.block_start(b) + u64::from(g.block_size) <= pos)
            {
                self.next_delta = delta.next_with(g.block_of(pos), self.limit, true);
            }
        }
        let from_delta = self.next_delta.map(|b| g.block_start(b).max(pos));
        let from_master = self.disk.master().next_data(pos)?;
        let start = match (from_delta, from_master) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        let end = if from_master == Some(start) {
            self.disk.master().next_hole(start)?
        } else {
            let block = g.block_of(start);
            let absent = delta
                .next_with(block, self.limit, false)
                .unwrap_or(self.limit);
            g.block_start(absent)
        };
        Ok(Some((start, end.min(size).max(start + 1))))
    }
}

/// Refuses an output that cannot hold a qcow2 image, or that is the master itself (a path, a
/// symlink or a hard link to it): the overlay would replace its own backing file.
fn refuse_output(master: &Path, out: &Path) -> Result<(), MountError> {
    let Ok(o) = std::fs::metadata(out) else {
        return Ok(());
    };
    if o.file_type().is_block_device() {
        return fail(ExportError::Qcow2OnDevice {
            out: out.to_path_buf(),
        });
    }
    if !o.is_file() {
        return fail(ExportError::Qcow2OutputKind {
            out: out.to_path_buf(),
        });
    }
    if let Ok(m) = std::fs::metadata(master) {
        if m.dev() == o.dev() && m.ino() == o.ino() {
            return fail(ExportError::Qcow2OutputIsMaster {
                out: out.to_path_buf(),
                master: master.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// The backing file name to record: an absolute master path as given; a relative one rewritten
/// relative to the overlay's directory, which is where qemu resolves a relative backing name.
fn backing_name(master: &Path, out: &Path) -> Result<PathBuf, MountError> {
    let name = if master.is_absolute() {
        master.to_path_buf()
    } else {
        let here = |p: &Path| -> Result<PathBuf, MountError> {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir.unwrap_or(Path::new("."));
            std::fs::canonicalize(dir).map_err(|source| {
                MountError::from(ExportError::DirectoryUnresolvable {
                    path: p.to_path_buf(),
                    source,
                })
            })
        };
        let file = master.file_name().ok_or_else(|| {
            MountError::from(ExportError::MasterNoFileName {
                master: master.to_path_buf(),
            })
        })?;
        let mut rel = relative_path(&here(master)?, &here(out)?);
        rel.push(file);
        protect_colon(rel)
    };
    let len = name.as_os_str().len();
    if len > MAX_BACKING_NAME {
        return fail(ExportError::BackingNameTooLong { name, len });
    }
    Ok(name)
}

/// The path from directory `from` to directory `to` (both canonical): `..` for every component
/// of `from` below their common prefix, then the rest of `to`. Empty when they are equal.
fn relative_path(to: &Path, from: &Path) -> PathBuf {
    let to: Vec<Component> = to.components().collect();
    let from: Vec<Component> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c.as_os_str());
    }
    rel
}

/// qemu reads a relative name with a colon before its first slash as `protocol:...`; `./`
/// in front keeps it a file name.
fn protect_colon(rel: PathBuf) -> PathBuf {
    let bytes = rel.as_os_str().as_bytes();
    let first = bytes.iter().position(|&b| b == b'/').unwrap_or(bytes.len());
    if bytes[..first].contains(&b':') {
        let mut v = b"./".to_vec();
        v.extend_from_slice(bytes);
        return PathBuf::from(OsString::from_vec(v));
    }
    rel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_prefix() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(relative_path(&p("/a/b"), &p("/a/b")), p(""));
        assert_eq!(relative_path(&p("/a/m"), &p("/a/o/p")), p("../../m"));
        assert_eq!(relative_path(&p("/a/b/c"), &p("/a")), p("b/c"));
        assert_eq!(relative_path(&p("/x"), &p("/y")), p("../x"));
    }

    #[test]
    fn a_colon_before_the_first_slash_gets_a_dot_slash() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(protect_colon(p("nbd:x.img")), p("./nbd:x.img"));
        assert_eq!(protect_colon(p("../a:b/m.img")), p("../a:b/m.img"));
        assert_eq!(protect_colon(p("m.img")), p("m.img"));
    }

    #[test]
    fn backing_names_resolve_from_the_overlay_directory() {
        let dir = crate::testutil::TempDir::new("qcow2-backing");
        std::fs::create_dir_all(dir.path("m")).unwrap();
        std::fs::create_dir_all(dir.path("o/deep")).unwrap();
        std::fs::write(dir.path("m/master.img"), b"x").unwrap();
        let abs = dir.path("m/master.img");
        assert_eq!(
            backing_name(&abs, &dir.path("o/c.qcow2")).unwrap(),
            abs,
            "an absolute path is kept as given"
        );
        // A relative path, from a working directory that is neither of the two.
        let cwd = std::env::current_dir().unwrap();
        let base = std::fs::canonicalize(&dir.0).unwrap();
        let master_rel = relative_path(&base.join("m"), &cwd).join("master.img");
        let out_rel = relative_path(&base.join("o/deep"), &cwd).join("c.qcow2");
        let name = backing_name(&master_rel, &out_rel).unwrap();
        assert_eq!(name, PathBuf::from("../../m/master.img"));
        assert_eq!(
            std::fs::canonicalize(base.join("o/deep").join(&name)).unwrap(),
            base.join("m/master.img")
        );
    }

    #[test]
    fn a_backing_name_longer_than_the_format_allows_is_refused() {
        let long = PathBuf::from(format!("/{}", "a".repeat(MAX_BACKING_NAME)));
        let e = backing_name(&long, Path::new("/tmp/x.qcow2")).unwrap_err();
        assert!(
            e.to_string()
                .contains("more than a qcow2 backing file name holds"),
            "{e}"
        );
    }
}
