//! Output paths that cannot destroy inputs: a command that writes a file refuses a
//! target that is one of its inputs (through symlinks, `..` or hard links) or a file of
//! the run directory, and an existing file unless `--overwrite` is given.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The identity of an existing file: (device, inode) on Unix, else its canonical path.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Where `path` would land once symlinks and `..` are resolved: the canonical path when
/// it exists, else its canonical parent joined with its name.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (parent.map(std::fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        (None, Some(name)) => std::env::current_dir()
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Fails when writing `out` could replace one of `inputs` or an existing file inside
/// `run_dir`, or an existing file at all without `overwrite`.
pub fn check_output(out: &Path, inputs: &[&Path], run_dir: &Path, overwrite: bool) -> Result<()> {
    let target = resolved(out);
    for input in inputs {
        let same = match (identity(out), identity(input)) {
            (Some(a), Some(b)) => a == b,
            _ => target == resolved(input),
        };
        if same {
            bail!(
                "{}: the output is the input {} (resolved to {}); choose another output path",
                out.display(),
                input.display(),
                target.display()
            );
        }
    }
    if out.exists() {
        if let Ok(run) = std::fs::canonicalize(run_dir) {
            if target.starts_with(&run) {
                bail!(
                    "{}: the output would replace a file of the run directory {}; \
                     choose a path outside it",
                    out.display(),
                    run_dir.display()
                );
            }
        }
        if !overwrite {
            bail!(
                "{}: the output file exists; pass --overwrite to replace it",
                out.display()
            );
        }
    }
    Ok(())
}
