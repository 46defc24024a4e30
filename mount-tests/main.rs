//! Mount tests: the real `sidfs` binary, real FUSE mounts, independent tools as oracles.
//! They need root, /dev/fuse and the packages `scripts/setup` installs.

mod common;
mod identity;
mod inspect;
mod overlay;
mod rewrite;
