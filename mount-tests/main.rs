//! Mount tests: the real `sidfs` binary, real FUSE mounts, independent tools as oracles.
//! They need root, /dev/fuse and the packages `scripts/setup-deps` installs.

mod all_stores;
mod boot;
mod clone_check;
mod common;
mod daemon;
mod deploy;
mod durability;
mod efs;
mod ese_compressed;
mod ese_logs;
mod evtx;
mod extension_records;
mod fail_closed;
mod hostname;
mod identity;
mod inspect;
mod inspect_data_disk;
mod overlay;
mod qcow2;
mod readpath;
mod refusals;
mod rewrite;
mod shadow;
mod sqlite_wal;
mod stores;
mod survey_cache;
mod testmaster;
mod wmi;
