//! Key node (nk) records.
//!
//! Layout [Suhanov "Key node"; libregf "Named key"]:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 2 | Signature "nk" |
//! | 0x02 | 2 | Flags |
//! | 0x04 | 8 | Last written timestamp |
//! | 0x0C | 4 | Access bits |
//! | 0x10 | 4 | Parent |
//! | 0x14 | 4 | Number of subkeys |
//! | 0x18 | 4 | Number of volatile subkeys |
//! | 0x1C | 4 | Subkeys list offset |
//! | 0x20 | 4 | Volatile subkeys list offset |
//! | 0x24 | 4 | Number of key values |
//! | 0x28 | 4 | Key values list offset |
//! | 0x2C | 4 | Key security offset |
//! | 0x30 | 4 | Class name offset |
//! | 0x34 | 4 | Largest subkey name length (+ bit fields) |
//! | 0x38 | 4 | Largest subkey class name length |
//! | 0x3C | 4 | Largest value name length |
//! | 0x40 | 4 | Largest value data size |
//! | 0x44 | 4 | WorkVar |
//! | 0x48 | 2 | Key name length (bytes) |
//! | 0x4A | 2 | Class name length (bytes) |
//! | 0x4C | … | Key name |
//!
//! Volatile subkeys live only in memory; on disk their count and list are meaningless.

use super::subkey_list::{compare_names, SubkeyList};
use super::value::ValueKey;
use super::{
    u16_at, u32_at, u64_at, Cell, CellOffset, FileOffset, Hive, HiveError, Name, Result,
    SecurityKey,
};

const SIGNATURE: u64 = 0x00;
const FLAGS: usize = 0x02;
const LAST_WRITTEN_TIMESTAMP: usize = 0x04;
const PARENT: usize = 0x10;
const NUMBER_OF_SUBKEYS: usize = 0x14;
const SUBKEYS_LIST_OFFSET: usize = 0x1C;
const NUMBER_OF_KEY_VALUES: usize = 0x24;
const KEY_VALUES_LIST_OFFSET: usize = 0x28;
const KEY_SECURITY_OFFSET: usize = 0x2C;
const CLASS_NAME_OFFSET: usize = 0x30;
const KEY_NAME_LENGTH: usize = 0x48;
const CLASS_NAME_LENGTH: usize = 0x4A;
const KEY_NAME: u64 = 0x4C;

/// KEY_VOLATILE: the key exists only in memory.
pub const KEY_VOLATILE: u16 = 0x0001;
/// KEY_HIVE_EXIT: a mount point of another hive.
pub const KEY_HIVE_EXIT: u16 = 0x0002;
/// KEY_HIVE_ENTRY: the root key of the hive.
pub const KEY_HIVE_ENTRY: u16 = 0x0004;
/// KEY_NO_DELETE.
pub const KEY_NO_DELETE: u16 = 0x0008;
/// KEY_SYM_LINK: the key is a symbolic link (value SymbolicLinkValue).
pub const KEY_SYM_LINK: u16 = 0x0010;
/// KEY_COMP_NAME: the name is stored one byte per character (Latin-1).
pub const KEY_COMP_NAME: u16 = 0x0020;

/// A key node, borrowed from its hive.
#[derive(Debug, Clone, Copy)]
pub struct KeyNode<'h> {
    hive: &'h Hive<'h>,
    cell: Cell<'h>,
}

impl<'h> KeyNode<'h> {
    /// Reads the nk record at `offset`, checking its signature and that the name fits the cell.
    pub fn parse(hive: &'h Hive<'h>, offset: CellOffset) -> Result<KeyNode<'h>> {
        let cell = hive.cell(offset)?;
        cell.expect_signature("nk")?;
        cell.expect_len(KEY_NAME, "nk record")?;
        let key = KeyNode { hive, cell };
        let name_len = u64::from(key.name_len());
        cell.sub_range(KEY_NAME, name_len, "nk key name")?;
        Ok(key)
    }

    fn u16_field(&self, at: usize) -> u16 {
        // parse() checked that the cell holds the 0x4C fixed bytes.
        u16_at(self.cell.data(), at).unwrap_or(0)
    }

    fn u32_field(&self, at: usize) -> u32 {
        // parse() checked that the cell holds the 0x4C fixed bytes.
        u32_at(self.cell.data(), at).unwrap_or(0)
    }

    /// The hive this key belongs to.
    pub fn hive(&self) -> &'h Hive<'h> {
        self.hive
    }

    /// The cell holding this record.
    pub fn cell(&self) -> Cell<'h> {
        self.cell
    }

    /// This key's cell offset (what parents' subkey lists and children's parent fields hold).
    pub fn offset(&self) -> CellOffset {
        self.cell.offset()
    }

    /// Absolute offset of the "nk" signature.
    pub fn file_offset(&self) -> FileOffset {
        self.cell.data_file_offset().plus(SIGNATURE)
    }

    /// The flags (KEY_*).
    pub fn flags(&self) -> u16 {
        self.u16_field(FLAGS)
    }

    /// True for the hive's root key (KEY_HIVE_ENTRY).
    pub fn is_root(&self) -> bool {
        self.flags() & KEY_HIVE_ENTRY != 0
    }

    /// The last-written FILETIME.
    pub fn last_written(&self) -> u64 {
        u64_at(self.cell.data(), LAST_WRITTEN_TIMESTAMP).unwrap_or(0)
    }

    /// The parent key's offset (meaningless for the root).
    pub fn parent(&self) -> CellOffset {
        CellOffset(self.u32_field(PARENT))
    }

    /// The stored number of (stable) subkeys.
    pub fn subkey_count(&self) -> u32 {
        self.u32_field(NUMBER_OF_SUBKEYS)
    }

    /// The subkey list offset (nil when there are none).
    pub fn subkey_list_offset(&self) -> CellOffset {
        CellOffset(self.u32_field(SUBKEYS_LIST_OFFSET))
    }

    /// The stored number of values.
    pub fn value_count(&self) -> u32 {
        self.u32_field(NUMBER_OF_KEY_VALUES)
    }

    /// The value list offset (nil when there are none).
    pub fn value_list_offset(&self) -> CellOffset {
        CellOffset(self.u32_field(KEY_VALUES_LIST_OFFSET))
    }

    /// The sk cell offset.
    pub fn security_offset(&self) -> CellOffset {
        CellOffset(self.u32_field(KEY_SECURITY_OFFSET))
    }

    /// Absolute offset of the key-security field (the rewrite never changes it, but a checker may
    /// want to see which keys share an sk).
    pub fn security_field_offset(&self) -> FileOffset {
        self.cell
            .data_file_offset()
            .plus(KEY_SECURITY_OFFSET as u64)
    }

    /// The class-name cell offset (nil when there is none).
    pub fn class_offset(&self) -> CellOffset {
        CellOffset(self.u32_field(CLASS_NAME_OFFSET))
    }

    /// The class-name length in bytes.
    pub fn class_len(&self) -> u16 {
        self.u16_field(CLASS_NAME_LENGTH)
    }

    /// The key-name length in bytes.
    pub fn name_len(&self) -> u16 {
        self.u16_field(KEY_NAME_LENGTH)
    }

    /// The key name with the absolute offset of its bytes.
    pub fn name(&self) -> Name<'h> {
        let len = usize::from(self.name_len());
        let start = KEY_NAME as usize;
        // parse() checked that the name fits the cell.
        let raw = self.cell.data().get(start..start + len).unwrap_or(&[]);
        Name::new(
            raw,
            self.flags() & KEY_COMP_NAME != 0,
            self.cell.data_file_offset().plus(KEY_NAME),
        )
    }

    /// The class name bytes (UTF-16LE) and their absolute offset, if the key has one.
    pub fn class(&self) -> Result<Option<(FileOffset, &'h [u8])>> {
        if self.class_offset().is_nil() || self.class_len() == 0 {
            return Ok(None);
        }
        let cell = self.hive.cell(self.class_offset())?;
        cell.sub_range(0, u64::from(self.class_len()), "class name")
            .map(Some)
    }

    /// The subkey list, or `None` when the key has no subkeys.
    pub fn subkey_list(&self) -> Result<Option<SubkeyList<'h>>> {
        if self.subkey_count() == 0 {
            return Ok(None);
        }
        SubkeyList::parse(self.hive, self.subkey_list_offset()).map(Some)
    }

    /// The subkeys in list order. Fails if the list does not hold exactly the stored subkey count
    /// or an entry is not a key node.
    pub fn subkeys(&self) -> Result<Vec<KeyNode<'h>>> {
        let Some(list) = self.subkey_list()? else {
            return Ok(Vec::new());
        };
        let entries = list.leaf_entries()?;
        if entries.len() as u64 != u64::from(self.subkey_count()) {
            return Err(HiveError::CountMismatch {
                offset: self.file_offset(),
                what: "subkeys in the subkey list vs nk subkey count",
                expected: u64::from(self.subkey_count()),
                found: entries.len() as u64,
            });
        }
        entries
            .iter()
            .map(|entry| KeyNode::parse(self.hive, entry.key))
            .collect()
    }

    /// The subkey called `name` (case-insensitive), if any. Linear over the subkey list, which
    /// is bounded by the list's cell sizes.
    pub fn subkey(&self, name: &str) -> Result<Option<KeyNode<'h>>> {
        let wanted: Vec<u16> = name.encode_utf16().collect();
        for child in self.subkeys()? {
            if compare_names(&child.name().units(), &wanted).is_eq() {
                return Ok(Some(child));
            }
        }
        Ok(None)
    }

    /// The values in list order (value lists are not sorted).
    pub fn values(&self) -> Result<Vec<ValueKey<'h>>> {
        ValueKey::list(self.hive, self.value_list_offset(), self.value_count())
    }

    /// The value called `name` (case-insensitive; "" is the default value), if any.
    pub fn value(&self, name: &str) -> Result<Option<ValueKey<'h>>> {
        let wanted: Vec<u16> = name.encode_utf16().collect();
        for value in self.values()? {
            if compare_names(&value.name().units(), &wanted).is_eq() {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// The key's security (sk) record.
    pub fn security(&self) -> Result<SecurityKey<'h>> {
        SecurityKey::parse(self.hive, self.security_offset())
    }
}
