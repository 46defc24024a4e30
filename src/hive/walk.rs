//! A bounded depth-first walk over all keys of a hive, with their paths.

use std::collections::HashSet;

use super::{CellOffset, Hive, HiveError, KeyNode, Result};

/// Deepest key nesting accepted. Windows limits key depth to 512 levels
/// (`CmpMaxKeyDepth`-style limit documented as "a registry tree can be 512 levels deep",
/// learn.microsoft.com "Registry element size limits").
pub const MAX_KEY_DEPTH: usize = 512;

/// A key reached by [`Hive::walk`].
#[derive(Debug, Clone)]
pub struct WalkedKey<'h> {
    /// Path below the root, components joined by `\`; "" for the root itself.
    pub path: String,
    /// 0 for the root.
    pub depth: usize,
    pub key: KeyNode<'h>,
}

/// Iterator returned by [`Hive::walk`]. Yields keys in pre-order (a key, then its subkeys in list
/// order). After an error it yields that error once and stops. Each key cell is visited at most
/// once, so cyclic or shared subkey lists end in [`HiveError::Cycle`], not in a loop.
#[derive(Debug)]
pub struct KeyWalk<'h> {
    hive: &'h Hive<'h>,
    stack: Vec<(CellOffset, String, usize)>,
    visited: HashSet<CellOffset>,
    started: bool,
    done: bool,
}

impl<'h> KeyWalk<'h> {
    pub(crate) fn new(hive: &'h Hive<'h>) -> KeyWalk<'h> {
        KeyWalk {
            hive,
            stack: Vec::new(),
            visited: HashSet::new(),
            started: false,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<WalkedKey<'h>>> {
        if !self.started {
            self.started = true;
            let root = self.hive.root_key()?;
            self.stack.push((root.offset(), String::new(), 0));
        }
        let Some((offset, path, depth)) = self.stack.pop() else {
            return Ok(None);
        };
        let key = self.hive.key(offset)?;
        if !self.visited.insert(offset) {
            return Err(HiveError::Cycle {
                offset: key.file_offset(),
                what: "key node reached twice in the key tree",
            });
        }
        if depth > MAX_KEY_DEPTH {
            return Err(HiveError::TooDeep {
                offset: key.file_offset(),
                depth: MAX_KEY_DEPTH,
            });
        }
        let children = key.subkeys()?;
        // Push in reverse so that the first subkey is visited first.
        for child in children.iter().rev() {
            let name = child.name().to_string_lossy();
            let child_path = if path.is_empty() {
                name
            } else {
                format!("{path}\\{name}")
            };
            self.stack.push((child.offset(), child_path, depth + 1));
        }
        Ok(Some(WalkedKey { path, depth, key }))
    }
}

impl<'h> Iterator for KeyWalk<'h> {
    type Item = Result<WalkedKey<'h>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(key)) => Some(Ok(key)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}
