//! Fuzzes the regf reader: parse without validation, then everything a SID rewrite or
//! `sidfs inspect` does with a hive — a full key walk with every value's data, the sk list both
//! ways, every cell, key lookups, and the Windows facts. Any panic, hang or huge allocation is
//! a bug: hostile hives must give errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidfs::hive::{windows, Hive};

/// Cells visited at most per input (the iterator is bounded by the data anyway; this keeps one
/// run short).
const MAX_CELLS: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    let Ok(hive) = Hive::parse_unvalidated(data) else {
        return;
    };
    let _ = hive.is_dirty();
    for walked in hive.walk() {
        let Ok(walked) = walked else { break };
        let key = &walked.key;
        let _ = key.name().to_string_lossy();
        let _ = key.class();
        let _ = key.security();
        if let Ok(Some(list)) = key.subkey_list() {
            let _ = list.leaf_entries();
        }
        if let Ok(values) = key.values() {
            for value in values {
                let _ = value.name().to_string_lossy();
                if let Ok(data) = value.data() {
                    let _ = data.to_vec();
                    let _ = data.to_utf16_string();
                    let _ = data.to_u32();
                }
            }
        }
    }
    let _ = hive.security_keys();
    let _ = hive.security_keys_in_cells();
    for cell in hive.cells().take(MAX_CELLS) {
        if cell.is_err() {
            break;
        }
    }
    for path in ["Policy\\PolAcDmS", "SAM\\Domains\\Account", "Select", "a\\b\\c"] {
        let _ = hive.open_key(path);
    }
    let _ = windows::machine_sid_from_security(&hive);
    let _ = windows::machine_sid_from_sam(&hive);
    let _ = windows::primary_domain(&hive);
    let _ = windows::account_domain_name(&hive);
    let _ = windows::local_accounts(&hive);
    let _ = windows::computer_names(&hive);
    let _ = windows::product_type(&hive);
    let _ = windows::windows_version(&hive);
    let _ = windows::user_profiles(&hive);
});
