//! One writer per run directory: an advisory lock (`flock`) on `RUN/.lock`, held for the
//! whole command. A command that writes into the run (train, search, compress,
//! finetune, eval, bench, report, reproduce) holds it exclusively; one that only reads
//! (predict, info) holds it shared, so several of those may run together, but never
//! beside a writer. A command that cannot get the lock fails at once, naming the
//! writer's pid and command line, instead of training beside it and leaving stage
//! records and configuration that disagree. The kernel drops the lock when its holder
//! exits, however it exits, so a lock left by a dead process is simply taken.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

/// Name of the lock file inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// What a command does with a run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only reads it (shared lock).
    Read,
    /// Writes into it (exclusive lock).
    Write,
}

/// The held lock of a run directory; released when the last clone is dropped or the
/// process ends.
#[derive(Debug, Clone)]
pub struct RunLock {
    _file: Arc<File>,
}

impl RunLock {
    /// Takes the lock of `root` (which must exist) for `access`, or fails naming its
    /// holder.
    pub fn acquire(root: &Path, access: Access) -> Result<Self> {
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the run lock {}", path.display()))?;
        let op = match access {
            Access::Read => libc::LOCK_SH,
            Access::Write => libc::LOCK_EX,
        };
        if let Err(err) = try_flock(&file, op) {
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                // Readers never write the record, so a writer refused while a shared
                // lock can still be had was refused by readers.
                let holder = if access == Access::Write && try_flock(&file, libc::LOCK_SH).is_ok() {
                    "a reading command (predict or info)".to_string()
                } else {
                    let mut record = String::new();
                    let _ = file.read_to_string(&mut record);
                    match record.trim() {
                        "" => "another slimseg process".to_string(),
                        r => r.replacen('\n', " (", 1) + ")",
                    }
                };
                bail!(
                    "{}: the run is in use by {holder}; wait for it to finish (one command \
                     per run directory at a time)",
                    root.display()
                );
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        if access == Access::Read {
            return Ok(RunLock {
                _file: Arc::new(file),
            });
        }
        // Record the writer for whoever is refused next.
        let command: Vec<String> = std::env::args().collect();
        let record = format!("pid {}\n{}\n", std::process::id(), command.join(" "));
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(record.as_bytes()))
            .with_context(|| format!("cannot write the run lock {}", path.display()))?;
        Ok(RunLock {
            _file: Arc::new(file),
        })
    }
}

/// `flock(op | LOCK_NB)` on `file`.
fn try_flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a file descriptor that `file` owns; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
