//! The FUSE adapter: translates kernel requests into [`CloneDisk`] calls and results into
//! replies. No logic of its own; every error is logged once, here, and mapped to an errno.
//!
//! A directory mountpoint shows `disk.img` (the clone's whole disk) and a read-only `clone.json`;
//! a regular-file mountpoint *is* the disk.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};
use log::{error, warn};

use crate::overlay::master::DIRECT_ALIGN;
use crate::overlay::{CloneDisk, OverlayError};

pub const DISK_NAME: &str = "disk.img";
pub const INFO_NAME: &str = "clone.json";

const ROOT: u64 = 1;
const DISK: u64 = 2;
const INFO: u64 = 3;
/// The disk's size never changes, but its allocated block count (st_blocks) grows with the delta,
/// so attributes are cached only briefly.
const TTL: Duration = Duration::from_secs(1);
/// The largest read or write the kernel may send in one request.
const MAX_IO: u32 = 1 << 20;
/// Requests the kernel keeps in flight in the background. With `FUSE_ASYNC_DIO` every O_DIRECT
/// read or write of an asynchronous submitter (qemu's `aio=native` or `io_uring`, fio's
/// libaio) is one, so this caps the queue depth that reaches the serving threads; readahead
/// shares it. The kernel's default (12) and fuser's (16) would cap a guest's queue of 32.
const MAX_BACKGROUND: u16 = 64;

thread_local! {
    /// Each serving thread's read buffer: no allocation and no zeroing per read. One alignment
    /// unit longer than the largest request, so that an aligned slice of it can take a direct
    /// read of the master.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// The mountpoint is a directory holding `disk.img` and `clone.json`.
    Directory,
    /// The mountpoint is a regular file that becomes the disk.
    File,
}

pub struct CloneFs {
    disk: Arc<CloneDisk>,
    kind: MountKind,
    info: Vec<u8>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

impl CloneFs {
    pub fn new(disk: Arc<CloneDisk>, kind: MountKind, info: Vec<u8>) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        CloneFs {
            disk,
            kind,
            info,
            uid,
            gid,
            mounted_at: SystemTime::now(),
        }
    }

    fn disk_ino(&self) -> u64 {
        match self.kind {
            MountKind::Directory => DISK,
            MountKind::File => ROOT,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let mut blocks = None;
        let t = self.mounted_at;
        let (mut mtime, mut ctime) = (t, t);
        let (kind, size, perm, nlink) = if ino == self.disk_ino() {
            let perm = if self.disk.is_read_only() {
                0o444
            } else {
                0o644
            };
            // Report what the clone really occupies (master data + delta), so that sparse-aware
            // tools (cp, rsync, qemu-img) see a sparse file and use SEEK_DATA/SEEK_HOLE.
            let block_size = u64::from(self.disk.geometry().block_size);
            let delta = self.disk.delta().present_blocks() * block_size;
            let used = (self.disk.master().allocated_bytes() + delta).min(self.disk.size());
            blocks = Some(used.div_ceil(512));
            // The disk's mtime and ctime follow its writes, so mtime-based backups see changes.
            let times = self.disk.times();
            (mtime, ctime) = (times.modified, times.changed);
            (FileType::RegularFile, self.disk.size(), perm, 1)
        } else if ino == ROOT {
            (FileType::Directory, 0, 0o755, 2)
        } else if ino == INFO && self.kind == MountKind::Directory {
            (FileType::RegularFile, self.info.len() as u64, 0o444, 1)
        } else {
            return None;
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: blocks.unwrap_or(size.div_ceil(512)),
            atime: t,
            mtime,
            ctime,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

fn errno_of(op: &str, err: &OverlayError) -> Errno {
    error!("{op}: {err}");
    Errno::from_i32(err.errno())
}

impl Filesystem for CloneFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        // Without FUSE_ASYNC_DIO the kernel turns an asynchronous O_DIRECT request into a
        // synchronous one inside io_submit, so a queue depth of 16 reaches us one at a time.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO) {
            warn!("the kernel offers no {missing:?}: O_DIRECT requests are served one at a time");
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.disk.sync() {
            error!("final sync at unmount: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT || self.kind != MountKind::Directory {
            return reply.error(Errno::ENOENT);
        }
        let ino = if name == DISK_NAME {
            DISK
        } else if name == INFO_NAME {
            INFO
        } else {
            return reply.error(Errno::ENOENT);
        };
        match self.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(attr) = self.attr(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // The disk's size is the master's; truncation is refused. The disk's mtime can be set
        // (`touch -d`); other time and mode changes are accepted and ignored (tools such as
        // `cp -p` set them).
        if let Some(s) = size {
            if s != attr.size {
                return reply.error(Errno::EPERM);
            }
        }
        if ino.0 == self.disk_ino() {
            match mtime {
                Some(fuser::TimeOrNow::SpecificTime(t)) => self.disk.set_modified(t),
                Some(fuser::TimeOrNow::Now) => self.disk.set_modified(SystemTime::now()),
                None => {}
            }
        }
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if ino.0 == self.disk_ino() {
            if write && self.disk.is_read_only() {
                return reply.error(Errno::EROFS);
            }
            // The kernel page cache stays valid across opens: only this process changes the disk,
            // and only through the kernel.
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        } else if ino.0 == INFO && self.kind == MountKind::Directory {
            if write {
                return reply.error(Errno::EACCES);
            }
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        } else if ino.0 == ROOT {
            reply.error(Errno::EISDIR);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 == self.disk_ino() {
            READ_BUF.with_borrow_mut(|buf| {
                // Grown once per serving thread to the largest request; `CloneDisk::read`
                // overwrites every byte it reports, so the buffer is never cleared.
                let len = size.min(MAX_IO) as usize;
                if buf.len() < len + DIRECT_ALIGN {
                    buf.resize(len + DIRECT_ALIGN, 0);
                }
                let start = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
                let out = &mut buf[start..start + len];
                // A client that bypasses the page cache (qemu `cache=none`, fio `--direct`) gets
                // the master read past the host's page cache as well.
                let read = if flags.0 & libc::O_DIRECT != 0 {
                    self.disk.read_direct(offset, out)
                } else {
                    self.disk.read(offset, out)
                };
                match read {
                    Ok(n) => reply.data(&out[..n]),
                    Err(e) => reply.error(errno_of("read", &e)),
                }
            })
        } else if ino.0 == INFO {
            let start = (offset as usize).min(self.info.len());
            let end = start.saturating_add(size as usize).min(self.info.len());
            reply.data(&self.info[start..end]);
        } else {
            reply.error(Errno::EISDIR);
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino.0 != self.disk_ino() {
            return reply.error(Errno::EACCES);
        }
        match self.disk.write(offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(OverlayError::OutOfRange { .. }) => reply.error(Errno::from_i32(libc::ENOSPC)),
            Err(e) => reply.error(errno_of("write", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.sync_reply(ino, reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync_reply(ino, reply)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT || self.kind != MountKind::Directory {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (DISK, FileType::RegularFile, DISK_NAME),
            (INFO, FileType::RegularFile, INFO_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.disk.size().div_ceil(4096);
        reply.statfs(blocks, 0, 0, 3, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.attr(ino.0) {
            Some(_) => reply.ok(),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // Discard/punch-hole would have to record "zero" blocks in the delta; callers (qemu)
        // fall back to writing zeros.
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if ino.0 != self.disk_ino() {
            return reply.error(Errno::EINVAL);
        }
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        if off >= self.disk.size() {
            return reply.error(Errno::ENXIO);
        }
        let result = match whence {
            libc::SEEK_DATA => self.disk.seek_data(off).map(|o| o.map(|o| o as i64)),
            libc::SEEK_HOLE => self.disk.seek_hole(off).map(|o| Some(o as i64)),
            _ => return reply.error(Errno::EINVAL),
        };
        match result {
            Ok(Some(o)) => reply.offset(o),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(errno_of("lseek", &e)),
        }
    }
}

impl CloneFs {
    fn sync_reply(&self, ino: INodeNo, reply: ReplyEmpty) {
        if ino.0 != self.disk_ino() || self.disk.is_read_only() {
            return reply.ok();
        }
        match self.disk.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of("fsync", &e)),
        }
    }
}
