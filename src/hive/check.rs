//! Structural checks of a whole hive that an independent reader relies on: every subkey list
//! sorted (uppercase code-unit order, shorter first on a common prefix) and every lf hint / lh hash
//! matching its key's name. Used by `sidfs verify`.

use std::cmp::Ordering;

use super::{compare_names, lf_hint, lh_hash, Hive, LeafTag};

/// Problems found, each one sentence with the offset; empty when the hive is sound.
pub fn check_hive(hive: &Hive<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    for walked in hive.walk() {
        let walked = match walked {
            Ok(w) => w,
            Err(e) => {
                problems.push(format!("walking the keys: {e}"));
                break;
            }
        };
        let list = match walked.key.subkey_list() {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                problems.push(format!("subkey list of {:?}: {e}", walked.path));
                continue;
            }
        };
        let entries = match list.leaf_entries() {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("subkey list of {:?}: {e}", walked.path));
                continue;
            }
        };
        let mut previous: Option<Vec<u16>> = None;
        for entry in entries {
            let name = match hive.key(entry.key) {
                Ok(k) => k.name().units(),
                Err(e) => {
                    problems.push(format!("subkey of {:?}: {e}", walked.path));
                    continue;
                }
            };
            match entry.tag {
                LeafTag::Hash(h) if h != lh_hash(&name) => problems.push(format!(
                    "lh hash at {} for {:?} under {:?}: expected {:#x}, found {h:#x}",
                    entry.file_offset,
                    String::from_utf16_lossy(&name),
                    walked.path,
                    lh_hash(&name)
                )),
                LeafTag::Hint(h) if h != lf_hint(&name) => problems.push(format!(
                    "lf hint at {} for {:?} under {:?} does not match the name",
                    entry.file_offset,
                    String::from_utf16_lossy(&name),
                    walked.path
                )),
                _ => {}
            }
            if let Some(prev) = &previous {
                if compare_names(prev, &name) != Ordering::Less {
                    problems.push(format!(
                        "subkeys of {:?} out of order: {:?} before {:?}",
                        walked.path,
                        String::from_utf16_lossy(prev),
                        String::from_utf16_lossy(&name)
                    ));
                }
            }
            previous = Some(name);
        }
    }
    problems
}
