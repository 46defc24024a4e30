//! Fuzzes MFT record parsing: the update-sequence fixups on the raw bytes, then a small NTFS
//! volume (a template made by mkntfs, path in `SIDFS_FUZZ_NTFS_TEMPLATE`; `scripts/fuzz-run`
//! makes it) whose first MFT records are replaced by the fuzzer's bytes, opened and used the way
//! `sidfs inspect` uses it. Corrupt records must give errors, never panics or hangs (panics
//! inside the `ntfs` crate are contained by `NtfsVolume` and count as errors).
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sidfs::image::ntfs_volume::attribute::{attribute_layout, MftMap};
use sidfs::image::ntfs_volume::fixup::apply_fixups;
use sidfs::image::ntfs_volume::mft_scan;
use sidfs::image::{ImageFile, ImageOffset, NtfsVolume, PartitionTable};

/// Bytes of the MFT the fuzzer may replace: the first 16 records of 1 KiB (system files).
const MFT_WINDOW: usize = 16 * 1024;

/// The working copy of the template and the MFT's offset in it.
struct Workspace {
    path: PathBuf,
    file: File,
    mft_offset: u64,
    original: Vec<u8>,
}

fn workspace() -> Option<&'static Workspace> {
    static WORKSPACE: OnceLock<Option<Workspace>> = OnceLock::new();
    WORKSPACE
        .get_or_init(|| {
            // libfuzzer-sys aborts on every panic, also on the `ntfs` crate panics that
            // NtfsVolume contains and turns into errors (as sidfs runs). Count those as handled
            // unless SIDFS_FUZZ_NTFS_PANICS=1 asks to hunt them; a panic that escapes the target
            // still aborts (libfuzzer-sys checks the unwind itself).
            if std::env::var_os("SIDFS_FUZZ_NTFS_PANICS").is_none() {
                std::panic::set_hook(Box::new(|_| {}));
            }
            let template = std::env::var_os("SIDFS_FUZZ_NTFS_TEMPLATE")?;
            let bytes = std::fs::read(template).ok()?;
            // Boot sector: bytes per sector @0x0B, sectors per cluster @0x0D, MFT LCN @0x30.
            let sector = u64::from(u16::from_le_bytes([bytes[0x0B], bytes[0x0C]]));
            let cluster = sector * u64::from(bytes[0x0D]);
            let lcn = u64::from_le_bytes(bytes[0x30..0x38].try_into().ok()?);
            let mft_offset = lcn * cluster;
            let start = mft_offset as usize;
            let original = bytes.get(start..start + MFT_WINDOW)?.to_vec();
            let path = std::env::temp_dir().join(format!("sidfs-fuzz-ntfs-{}", std::process::id()));
            std::fs::write(&path, &bytes).ok()?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .ok()?;
            Some(Workspace {
                path,
                file,
                mft_offset,
                original,
            })
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    // Fixups on each 1 KiB record of the input.
    for chunk in data.chunks(1024) {
        let mut record = chunk.to_vec();
        let _ = apply_fixups(&mut record, ImageOffset(0), "fuzzed record");
        let mut record = chunk.to_vec();
        let _ = sidfs::image::ntfs_volume::record::FileRecord::parse(&mut record, ImageOffset(0));
    }
    let Some(ws) = workspace() else { return };
    let mut window = ws.original.clone();
    let n = data.len().min(MFT_WINDOW);
    window[..n].copy_from_slice(&data[..n]);
    if ws.file.write_all_at(&window, ws.mft_offset).is_err() {
        return;
    }
    let Ok(image) = ImageFile::open(&ws.path) else { return };
    let Ok(table) = PartitionTable::read(&image) else { return };
    let Some(partition) = table.partitions.first() else { return };
    let Ok(volume) = NtfsVolume::open(&image, partition) else { return };
    let _ = volume.facts();
    let _ = volume.log_file_state();
    let _ = volume.hibernation_state();
    let _ = volume.list_dir("");
    let _ = volume.try_lookup(r"Windows\System32\config\SYSTEM");
    let _ = volume.stream_layout("$Secure", "$SDS");
    let _ = volume.read_file("$UpCase", "", 1 << 20);
    let _ = volume.locate_hives();
    let _ = volume.scan_special_files(64, 2);
    // sidfs's own NTFS layer: records, attribute lists, runs, the MFT pass, `$Secure`'s layout.
    if let Ok(facts) = volume.facts() {
        let _ = mft_scan::scan(&image, &facts, |_| true);
        if let Ok(mft) = MftMap::open(&image, &facts) {
            for record in 0..16 {
                for ty in [0x80, 0x90, 0xA0] {
                    let _ = attribute_layout(&image, &mft, record, ty, "");
                    let _ = attribute_layout(&image, &mft, record, ty, "$SDS");
                    let _ = attribute_layout(&image, &mft, record, ty, "$SII");
                }
            }
        }
        let _ = sidfs::rewrite::secure::SecureParts::read(&image, &volume);
    }
});
