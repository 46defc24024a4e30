//! Mount tests: the real `sidfs` binary, real FUSE mounts, independent tools as oracles.
//! They need root, /dev/fuse and the packages `scripts/setup-deps` installs.

mod boot;
mod common;
mod deploy;
mod evtx;
mod identity;
mod inspect;
mod overlay;
mod refusals;
mod rewrite;
