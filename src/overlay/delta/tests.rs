//! Tests of the delta store: crash-safety ordering, map format, session marker, failures.

use super::*;

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sidfs-delta-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn map_survives_reopen_only_after_sync() {
    let dir = tempdir("reopen");
    let g = Geometry::new(1 << 30, 4096);
    {
        let d = DeltaStore::create(&dir, g).unwrap();
        assert!(d.store_if_absent(BlockIndex(5), &vec![7u8; 4096]).unwrap());
        assert!(!d.store_if_absent(BlockIndex(5), &vec![8u8; 4096]).unwrap());
        d.sync().unwrap();
        assert!(d
            .store_if_absent(BlockIndex(200_000), &vec![9u8; 4096])
            .unwrap());
        // dropped without sync: block 200000's bit must not be durable
    }
    let d = DeltaStore::open(&dir, g).unwrap();
    assert!(d.contains(BlockIndex(5)));
    assert!(!d.contains(BlockIndex(200_000)));
    let mut buf = vec![0u8; 4096];
    d.read_at(5 * 4096, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 7));
    assert_eq!(d.present_blocks(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn next_with_finds_runs_across_words() {
    let dir = tempdir("runs");
    let g = Geometry::new(4096 * 1000, 4096);
    let d = DeltaStore::create(&dir, g).unwrap();
    for b in [3u64, 64, 65, 130] {
        d.store_if_absent(BlockIndex(b), &vec![1; 4096]).unwrap();
    }
    let end = BlockIndex(1000);
    assert_eq!(d.next_with(BlockIndex(0), end, true), Some(BlockIndex(3)));
    assert_eq!(d.next_with(BlockIndex(4), end, true), Some(BlockIndex(64)));
    assert_eq!(
        d.next_with(BlockIndex(64), end, false),
        Some(BlockIndex(66))
    );
    assert_eq!(d.next_with(BlockIndex(131), end, true), None);
    assert_eq!(d.next_with(BlockIndex(0), BlockIndex(3), true), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Prove that a delta cut short under blocks the map holds is refused (not re-extended with
/// zeros), and that one cut short only where the map holds nothing is extended again.
#[test]
fn open_refuses_a_delta_truncated_under_present_blocks() {
    let dir = tempdir("truncated");
    let g = Geometry::new(8 << 20, 4096);
    {
        let d = DeltaStore::create(&dir, g).unwrap();
        d.store_if_absent(BlockIndex(10), &vec![1u8; 4096]).unwrap();
        d.store_if_absent(BlockIndex(1500), &vec![2u8; 4096])
            .unwrap();
        d.sync().unwrap();
    }
    let delta = dir.join(DELTA_FILE);
    let set_len = |len: u64| {
        OpenOptions::new()
            .write(true)
            .open(&delta)
            .unwrap()
            .set_len(len)
            .unwrap()
    };
    // Cut after every present block: nothing is lost, the delta is extended again.
    set_len(1501 * 4096);
    {
        let d = DeltaStore::open(&dir, g).unwrap();
        assert_eq!(std::fs::metadata(&delta).unwrap().len(), 8 << 20);
        let mut buf = vec![0u8; 4096];
        d.read_at(1500 * 4096, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 2));
    }
    // Cut inside block 1500: its tail is gone.
    set_len(1500 * 4096 + 100);
    match DeltaStore::open(&dir, g) {
        Err(OverlayError::StateCorrupt { reason, .. }) => {
            assert!(reason.contains("truncated"), "{reason}");
            assert!(reason.contains("1 blocks"), "{reason}");
            assert!(reason.contains("0x5dc000"), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a truncated delta was opened"),
    }
    assert_eq!(std::fs::metadata(&delta).unwrap().len(), 1500 * 4096 + 100);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Prove that the whole map is allocated at creation (so map writes never need space), and
/// that the session marker reads unsynced from `begin_session` until `end_session`.
#[test]
fn map_is_preallocated_and_session_marker_round_trips() {
    let dir = tempdir("session");
    let g = Geometry::new(1 << 32, 4096);
    let d = DeltaStore::create(&dir, g).unwrap();
    let md = std::fs::metadata(dir.join(MAP_FILE)).unwrap();
    assert_eq!(md.len(), map_len(g));
    assert!(
        md.blocks() * 512 >= map_len(g),
        "the map is sparse: {} of {} bytes allocated",
        md.blocks() * 512,
        map_len(g)
    );
    assert!(DeltaStore::last_session_synced(&dir).unwrap());
    d.begin_session().unwrap();
    assert!(!DeltaStore::last_session_synced(&dir).unwrap());
    d.end_session().unwrap();
    assert!(DeltaStore::last_session_synced(&dir).unwrap());
    drop(d);
    // The marker does not disturb reading the map.
    DeltaStore::open(&dir, g).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Prove that an overwrite of a block already in the delta (which sets no map bit) counts as
/// an unsynced change until the next sync, so that the background sync covers it.
#[test]
fn overwrites_are_unsynced_changes() {
    let dir = tempdir("dirty");
    let g = Geometry::new(1 << 20, 4096);
    let d = DeltaStore::create(&dir, g).unwrap();
    assert!(!d.has_unsynced_changes());
    d.store_if_absent(BlockIndex(3), &vec![1u8; 4096]).unwrap();
    assert!(d.has_unsynced_changes());
    d.sync().unwrap();
    assert!(!d.has_unsynced_changes());
    d.write_at(3 * 4096, b"again").unwrap();
    assert!(d.has_unsynced_changes());
    d.sync().unwrap();
    assert!(!d.has_unsynced_changes());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Prove that once a delta sync has failed, every later sync fails (EIO) instead of
/// reporting success for data the kernel may have dropped, and no map bit is written.
#[test]
fn a_failed_delta_sync_fails_every_later_sync() {
    let dir = tempdir("lost");
    let g = Geometry::new(1 << 20, 4096);
    {
        let d = DeltaStore::create(&dir, g).unwrap();
        d.store_if_absent(BlockIndex(2), &vec![1u8; 4096]).unwrap();
        // What `sync` records when fdatasync of the delta fails.
        d.lost.set("syncing it failed (EIO)".into()).unwrap();
        for _ in 0..2 {
            let e = d.sync().unwrap_err();
            assert!(matches!(e, OverlayError::NotDurable { .. }), "{e}");
            assert_eq!(e.errno(), libc::EIO);
        }
        assert!(d.check_durable().is_err());
        assert!(d.end_session().is_err());
    }
    let d = DeltaStore::open(&dir, g).unwrap();
    assert!(
        !d.contains(BlockIndex(2)),
        "a map bit was written after the failure"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn open_rejects_foreign_map() {
    let dir = tempdir("foreign");
    let g = Geometry::new(1 << 20, 4096);
    DeltaStore::create(&dir, g).unwrap();
    let other = Geometry::new(2 << 20, 4096);
    assert!(matches!(
        DeltaStore::open(&dir, other),
        Err(OverlayError::StateCorrupt { .. })
    ));
    std::fs::write(dir.join(MAP_FILE), b"garbage").unwrap();
    assert!(DeltaStore::open(&dir, g).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
