//! One writer per run directory: an advisory lock (`flock`) on `RUN/.lock`, held for the
//! whole command. A command that writes into the run (train, search, compress,
//! finetune, eval, bench, report, reproduce) holds it exclusively; one that only reads
//! (predict, info) holds it shared, so several of those may run together, but never
//! beside a writer. A command that cannot get the lock fails at once, naming the
//! writer's pid and command line, instead of training beside it and leaving stage
//! records and configuration that disagree. The kernel drops the lock when its holder
//! exits, however it exits, so a lock left by a dead process is simply taken.
//!
//! Holding the exclusive lock also means that no other process is writing into the run,
//! so every temporary file or staging folder found in it was left by an interrupted
//! write: [`remove_leftovers`] deletes them when a writing command starts.

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

/// Whether a file or folder name is one of slimseg's temporary names: `.NAME.tmp-PID-N`
/// (atomic file writes of slimseg-data), `.NAME.tmpPID` (slimseg-model), `.NAME.tmp`
/// (checkpoint folders being written) or `.NAME.partial-PID-N` (a synthetic cohort
/// being generated).
fn is_leftover(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let pid_n = |s: &str| {
        s.split_once('-')
            .is_some_and(|(a, b)| digits(a) && digits(b))
    };
    if let Some((stem, tail)) = rest.rsplit_once(".tmp") {
        return !stem.is_empty()
            && (tail.is_empty() || digits(tail) || tail.strip_prefix('-').is_some_and(pid_n));
    }
    rest.rsplit_once(".partial-")
        .is_some_and(|(stem, tail)| !stem.is_empty() && pid_n(tail))
}

/// Deletes, under `root` (not following symlinks), every temporary file or folder that
/// an interrupted write left behind; returns how many and their size in bytes. Call it
/// only while holding the run's exclusive lock.
pub fn remove_leftovers(root: &Path) -> Result<(usize, u64)> {
    fn size(path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::read_dir(path)
                .map(|es| es.flatten().map(|e| size(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    let (mut count, mut bytes) = (0, 0);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if is_leftover(&entry.file_name().to_string_lossy()) {
                bytes += size(&path);
                if kind.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .with_context(|| format!("cannot remove the leftover {}", path.display()))?;
                count += 1;
            } else if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::is_leftover;

    #[test]
    fn temporary_names_are_told_from_user_files() {
        for name in [
            ".weights.safetensors.tmp-123-0",
            ".model.toml.tmp4242",
            ".epoch-0003.tmp",
            ".data.partial-77-2",
        ] {
            assert!(is_leftover(name), "{name}");
        }
        for name in [
            "weights.safetensors.tmp-1-0",
            ".lock",
            ".notes.tmpl",
            ".tmp",
            ".x.tmp-1",
            ".x.tmp-a-1",
            ".data.partial-1",
            "notes.tmp",
        ] {
            assert!(!is_leftover(name), "{name}");
        }
    }
}
