//! Output paths that cannot destroy inputs: a command that writes a file refuses a
//! target that is one of its inputs (through symlinks, `..` or hard links) or lies in the
//! run directory and exists, and an existing file unless `--overwrite` is given.

use std::path::{Component, Path, PathBuf};

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

/// `path`, joined to the working directory when relative (as is, if that is unknown).
fn absolute(path: &Path) -> PathBuf {
    crate::run::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Appends `parts` to `out`, applying `.` and `..` by their names alone.
fn push_lexically<'a>(out: &mut PathBuf, parts: impl IntoIterator<Item = Component<'a>>) {
    for c in parts {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
}

/// `path` made absolute with `.` and `..` removed by their names alone, without
/// following symlinks.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    push_lexically(&mut out, absolute(path).components());
    out
}

/// Where writing `path` would land: its deepest existing ancestor with symlinks
/// resolved, then the rest of the path, whose `..` can be applied by name since those
/// folders do not exist yet (so none of them is a symlink).
fn resolved(path: &Path) -> PathBuf {
    let absolute = absolute(path);
    let parts: Vec<Component> = absolute.components().collect();
    for split in (1..=parts.len()).rev() {
        let head: PathBuf = parts[..split].iter().collect();
        if let Ok(mut out) = std::fs::canonicalize(&head) {
            push_lexically(&mut out, parts[split..].iter().copied());
            return out;
        }
    }
    lexical(path)
}

/// Fails when writing `out` could replace one of `inputs` or an existing file inside
/// `run_dir` (by its resolved or its literal path), or an existing file at all without
/// `overwrite`.
pub fn check_output(out: &Path, inputs: &[&Path], run_dir: &Path, overwrite: bool) -> Result<()> {
    let target = resolved(out);
    for input in inputs {
        let same = match (identity(&target), identity(input)) {
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
    if target.exists() {
        let in_run =
            target.starts_with(resolved(run_dir)) || lexical(out).starts_with(lexical(run_dir));
        if in_run {
            bail!(
                "{}: the output would replace a file of the run directory {}; \
                 choose a path outside it",
                out.display(),
                run_dir.display()
            );
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

/// Fails when the output folder `out` (replaced as a whole) is or holds the run
/// directory, the working directory or a folder above them, lies inside the run, is a
/// file, or exists without `overwrite`, or exists without being what this command writes
/// (`ours`): `--overwrite` replaces an earlier output, never other data.
pub fn check_output_dir(
    out: &Path,
    run_dir: &Path,
    overwrite: bool,
    ours: impl Fn(&Path) -> bool,
) -> Result<()> {
    let target = resolved(out);
    let run = resolved(run_dir);
    let cwd = std::env::current_dir()
        .map(|d| resolved(&d))
        .unwrap_or_default();
    if target.starts_with(&run) || run.starts_with(&target) || cwd.starts_with(&target) {
        bail!(
            "{}: the output folder would replace or contain the run directory {} or the \
             working directory; choose a new folder outside them",
            out.display(),
            run_dir.display()
        );
    }
    if target.is_file() {
        bail!("{}: is a file; the output is a folder", out.display());
    }
    if target.exists() {
        if !overwrite {
            bail!("{}: exists; pass --overwrite to replace it", out.display());
        }
        if !ours(&target) {
            bail!(
                "{}: exists and is not an earlier output of this command; it is not replaced \
                 (remove it yourself, or choose another folder)",
                out.display()
            );
        }
    }
    Ok(())
}
