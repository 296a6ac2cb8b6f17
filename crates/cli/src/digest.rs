//! Content digests (SHA-256): of files, of a stage folder's outputs, and of a dataset,
//! so that what a stage was made from is identified by content, not by path or time.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use slimseg_data::AcdcDataset;
use slimseg_search::config::DataConfig;

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a string, in hex.
pub fn of_text(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// SHA-256 of a file's content, in hex (read in 1 MiB pieces).
pub fn of_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Digests of every regular file under `dir` by path relative to it (with `/`),
/// skipping the top-level entries named in `skip` and hidden entries (temporary files).
pub fn of_tree(dir: &Path, skip: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out)?;
    Ok(out)
}

/// Stores files of equal content under `dir` once: each later copy (path order) becomes
/// a hard link to the first, so a stage keeps its last checkpoint, last and best weights
/// without paying for copies that are the same bytes (the last weights are the
/// checkpoint's; after a last-epoch best, all three are one file). Every writer replaces
/// files by renaming a new one into place, so a link is never written through. Returns
/// the number of files linked and the bytes saved; where the file system has no hard
/// links the copies stay.
/// `digests` are those of every file under `dir` ([`of_tree`] with nothing skipped).
pub fn link_duplicates(dir: &Path, digests: &BTreeMap<String, String>) -> Result<(usize, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut first: BTreeMap<&str, std::path::PathBuf> = BTreeMap::new();
    let (mut linked, mut saved) = (0usize, 0u64);
    for (rel, digest) in digests {
        let path = dir.join(rel);
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if !meta.is_file() || meta.len() == 0 {
            continue;
        }
        let Some(keep) = first.get(digest.as_str()) else {
            first.insert(digest, path);
            continue;
        };
        let k = std::fs::metadata(keep)?;
        if (k.dev(), k.ino()) == (meta.dev(), meta.ino()) {
            continue;
        }
        // A temporary name the leftover sweep knows (`.NAME.tmpPID`).
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(keep, &tmp).is_err() {
            break;
        }
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot replace {} by a link", path.display()))?;
        linked += 1;
        saved += meta.len();
    }
    Ok((linked, saved))
}

/// `digests` (from [`of_tree`]) without the entries under the top-level names in `skip`,
/// as [`of_tree`] with that `skip` would give them.
pub fn without(mut digests: BTreeMap<String, String>, skip: &[&str]) -> BTreeMap<String, String> {
    digests.retain(|rel, _| !skip.contains(&rel.split('/').next().unwrap_or(rel)));
    digests
}

fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || (dir == root && skip.contains(&name.as_str())) {
            continue;
        }
        let path = e.path();
        // Symbolic links are followed: a tree of links to the files is the same data.
        let kind = std::fs::metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .file_type();
        if kind.is_dir() {
            if path
                .strip_prefix(root)
                .map_or(0, |r| r.components().count())
                > 16
            {
                bail!("{}: folders nested more than 16 deep", path.display());
            }
            walk(root, &path, skip, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("under the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(rel, of_file(&path)?);
        }
    }
    Ok(())
}

/// What a dataset is, by content: the patients a run uses and one digest over their
/// files (paths relative to the data root, so a moved copy is the same data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// Patient ids used (training, validation and test), ascending.
    pub patients: Vec<u32>,
    /// Files digested.
    pub files: usize,
    /// SHA-256 over the relative paths and contents of those files.
    pub digest: String,
}

impl DataIdentity {
    /// The identity of the patients `ids` of the ACDC tree at `root`.
    pub fn of_patients(ds: &AcdcDataset, ids: &[u32]) -> Result<Self> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut h = Sha256::new();
        let mut files = 0;
        for &id in &ids {
            let Some(p) = ds.patient(id) else {
                bail!("{}: no patient {id}", ds.root.display());
            };
            let rel_dir = p.dir.strip_prefix(&ds.root).unwrap_or(&p.dir);
            for (rel, d) in of_tree(&p.dir, &[])? {
                h.update(format!("{}/{rel}\0{d}\n", rel_dir.display()).as_bytes());
                files += 1;
            }
        }
        Ok(DataIdentity {
            patients: ids,
            files,
            digest: hex(&h.finalize()),
        })
    }

    /// The identity of the data a run configuration trains and tests on.
    pub fn of_run_data(root: &Path, data: &DataConfig) -> Result<Self> {
        let ds = AcdcDataset::open(root)
            .with_context(|| format!("cannot open the dataset at {}", root.display()))?;
        let split = data
            .split
            .resolve(&ds.ids())
            .with_context(|| format!("the split of {}", root.display()))?;
        let ids: Vec<u32> = split
            .train
            .iter()
            .chain(&split.val)
            .chain(&split.test)
            .copied()
            .collect();
        Self::of_patients(&ds, &ids)
    }

    /// Short form for tables: the patient count and the first 12 hex digits.
    pub fn short(&self) -> String {
        format!(
            "{} patients, {} files, sha256 {}",
            self.patients.len(),
            self.files,
            self.digest.chars().take(12).collect::<String>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_digest_skips_hidden_and_named_entries_and_sees_content() {
        let dir = std::env::temp_dir().join(format!("slimseg-digest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("model")).unwrap();
        std::fs::write(dir.join("a.json"), "1").unwrap();
        std::fs::write(dir.join("model/w.bin"), "2").unwrap();
        std::fs::write(dir.join(".a.json.tmp-1-0"), "x").unwrap();
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        std::fs::write(dir.join("checkpoints/c"), "3").unwrap();
        let t = of_tree(&dir, &["checkpoints"]).unwrap();
        assert_eq!(
            t.keys().cloned().collect::<Vec<_>>(),
            ["a.json", "model/w.bin"]
        );
        assert_eq!(t["a.json"], of_text("1"));
        std::fs::write(dir.join("a.json"), "2").unwrap();
        assert_ne!(
            of_tree(&dir, &["checkpoints"]).unwrap()["a.json"],
            t["a.json"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn identical_files_are_stored_once_and_a_later_write_replaces_only_its_path() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("slimseg-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("checkpoints/epoch-0001")).unwrap();
        let w = vec![7u8; 4096];
        for f in [
            "best.safetensors",
            "weights.safetensors",
            "checkpoints/epoch-0001/model.safetensors",
        ] {
            std::fs::write(dir.join(f), &w).unwrap();
        }
        std::fs::write(dir.join("other.safetensors"), vec![8u8; 4096]).unwrap();
        std::fs::write(dir.join("empty-a"), b"").unwrap();
        std::fs::write(dir.join("empty-b"), b"").unwrap();
        let before = of_tree(&dir, &[]).unwrap();
        assert_eq!(
            without(before.clone(), &["checkpoints"]),
            of_tree(&dir, &["checkpoints"]).unwrap()
        );
        assert_eq!(link_duplicates(&dir, &before).unwrap(), (2, 2 * 4096));
        assert_eq!(of_tree(&dir, &[]).unwrap(), before, "contents unchanged");
        let ino = |f: &str| std::fs::metadata(dir.join(f)).unwrap().ino();
        let first = ino("best.safetensors");
        assert_eq!(ino("weights.safetensors"), first);
        assert_eq!(ino("checkpoints/epoch-0001/model.safetensors"), first);
        assert_ne!(ino("other.safetensors"), first);
        // Linked already: nothing more to do.
        assert_eq!(link_duplicates(&dir, &before).unwrap(), (0, 0));
        // Writers rename a new file into place: the other paths keep their bytes.
        slimseg_data::write_atomic(&dir.join("weights.safetensors"), b"new").unwrap();
        assert_eq!(std::fs::read(dir.join("best.safetensors")).unwrap(), w);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
