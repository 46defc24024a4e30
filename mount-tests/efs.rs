//! EFS metadata (issue 11): an encrypted file's `$EFS` (`$LOGGED_UTILITY_STREAM`) that holds a
//! user SID under the machine SID, written through ntfs-3g's `system.ntfs_efsinfo` (mounted with
//! `efs_raw`), makes `sidfs mount` refuse with one line naming the file and what to do.

use std::process::Command;

use crate::common::*;

const SID: &str = "S-1-5-21-1806060109-1839359715-529511253";
const FILE: &str = "Users/Public/secret.txt";

/// An `$EFS` value: header (length, state 0, version 2, crypto API 0, three 16-byte hash fields,
/// DDF offset, DRF offset, reserved) and a body with `user`'s binary SID inside.
pub(crate) fn efs_value(user: &[u8]) -> Vec<u8> {
    let mut body = vec![0x11u8; 64];
    body.extend_from_slice(user);
    body.extend_from_slice(&[0x22u8; 64]);
    let len = 0x54 + body.len() as u32;
    let mut v = Vec::new();
    for x in [len, 0, 2, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&[0u8; 48]);
    v.extend_from_slice(&0x54u32.to_le_bytes());
    v.extend_from_slice(&[0u8; 16]);
    v.extend_from_slice(&body);
    v
}

pub(crate) fn user_sid(rid: u32) -> Vec<u8> {
    let (_, _, triple) = sid_forms(SID);
    let mut b = vec![1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0];
    b.extend_from_slice(&triple);
    b.extend_from_slice(&rid.to_le_bytes());
    b
}

/// A data disk with one file whose `$EFS` is `value`.
pub(crate) fn disk_with_efs(s: &Scratch, name: &str, value: &[u8]) -> std::path::PathBuf {
    let img = data_disk(s, name, &[(FILE, b"")]);
    let dev = LoopDev::writable(&img, 0, DATA_DISK_SIZE);
    let vol = s.mkdir(&format!("{name}-efs"));
    ok(Command::new("ntfs-3g")
        .arg("-o")
        .arg("efs_raw")
        .arg(&dev.0)
        .arg(&vol));
    let m = RwMount(vol);
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    ok(Command::new("setfattr")
        .args(["-n", "system.ntfs_efsinfo", "-v"])
        .arg(format!("0x{hex}"))
        .arg(m.0.join(FILE)));
    drop(m);
    drop(dev);
    img
}

/// Prove that an `$EFS` holding a local user's SID (machine SID + RID 1001) is refused by
/// `sidfs mount --old-sid` with one line naming the file and `cipher /d`, and that an `$EFS`
/// holding only another machine's SID does not stop the mount.
#[test]
fn an_efs_attribute_with_the_machine_sid_is_refused() {
    if !have_tool("ntfs-3g") || !have_tool("mkntfs") || !have_tool("setfattr") {
        return;
    }
    let s = Scratch::new("efs");
    let master = disk_with_efs(&s, "data.img", &efs_value(&user_sid(1001)));
    let mp = s.mkdir("mp");
    let out = mount_cmd(&master, &mp, 61, &s.path("state"), &["--old-sid", SID]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line_error(&out);
    assert!(line.contains("$EFS"), "{line}");
    assert!(line.contains("secret.txt"), "{line}");
    assert!(line.contains("cipher /d"), "{line}");
    assert!(!mp.join("disk.img").exists());

    let mut other = user_sid(1001);
    other[12] ^= 1; // another machine's SID
    let master = disk_with_efs(&s, "other.img", &efs_value(&other));
    let m = Mounted::new(
        &master,
        &mp,
        62,
        &s.path("state-other"),
        &["--old-sid", SID],
    );
    assert!(m.disk().exists());
    m.unmount();
}
