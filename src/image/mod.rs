//! Whole-disk image understanding: partition maps, NTFS volumes.
