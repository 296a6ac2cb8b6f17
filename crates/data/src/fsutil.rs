//! Atomic file writes: write a sibling temporary file, then rename it over the target;
//! staging folders for results that appear all at once.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{DataError, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: readers see either the old file or the complete
/// new one, never a partial write. Parent directories are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // No fsync: the rename makes the write atomic for readers; durability across
        // power loss is not a goal for derived data.
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}

/// A free name for a staging folder beside `root`: `.NAME.partial-PID-N`. Work built in
/// it is renamed onto `root` when complete; one left by a killed process is recognised by
/// that pattern and removed.
pub fn staging_sibling(root: &Path) -> PathBuf {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    (0u32..)
        .map(|n| root.with_file_name(format!(".{name}.partial-{}-{n}", std::process::id())))
        .find(|p| !p.exists())
        .expect("a free staging name")
}
