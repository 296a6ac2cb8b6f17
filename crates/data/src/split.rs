//! Patient splits: the TransUNet/Swin-Unet default, k-fold, and explicit lists from a file.
//!
//! Split file format (text): one line per part, `train:`, `val:` (or `validation:`) and
//! `test:`, each followed by patient ids as `patient001`, `001` or `1`, separated by
//! spaces or commas; a line may continue on following lines that start with whitespace;
//! `#` starts a comment. Example:
//!
//! ```text
//! # my split
//! train: patient001 patient004 5 6
//! val:   7, 10
//! test:  2 3
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::acdc::{parse_patient_name, patient_name};
use crate::error::{DataError, Result};
use crate::fsutil::write_atomic;

/// Test patients of the TransUNet/Swin-Unet ACDC split.
pub const TRANSUNET_TEST: [u32; 20] = [
    2, 3, 8, 9, 12, 14, 17, 24, 42, 48, 49, 53, 55, 64, 67, 79, 81, 88, 92, 95,
];
/// Validation patients of the TransUNet/Swin-Unet ACDC split.
pub const TRANSUNET_VAL: [u32; 10] = [19, 21, 29, 33, 41, 50, 61, 71, 76, 80];

/// Three disjoint lists of patient ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training patients.
    pub train: Vec<u32>,
    /// Validation patients (may be empty).
    pub val: Vec<u32>,
    /// Test patients.
    pub test: Vec<u32>,
}

/// How to choose a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SplitSpec {
    /// TransUNet/Swin-Unet: 70 train, 10 val, 20 test among patients 1-100.
    TransUnet,
    /// Fold `fold` of a `k`-fold split of the given ids, shuffled with `seed`; the fold is
    /// the test set, the next fold (cyclically) the validation set when `with_val`.
    KFold {
        /// Number of folds (>= 2).
        k: usize,
        /// Which fold is the test set (0-based, < k).
        fold: usize,
        /// Shuffle seed.
        seed: u64,
        /// Whether to take the next fold as validation set.
        with_val: bool,
    },
    /// Lists read from a split file.
    File(PathBuf),
}

impl Split {
    /// The TransUNet/Swin-Unet split of ACDC training patients 001-100.
    pub fn transunet() -> Self {
        let held: BTreeSet<u32> = TRANSUNET_TEST
            .iter()
            .chain(&TRANSUNET_VAL)
            .copied()
            .collect();
        Split {
            train: (1..=100).filter(|i| !held.contains(i)).collect(),
            val: TRANSUNET_VAL.to_vec(),
            test: TRANSUNET_TEST.to_vec(),
        }
    }

    /// Fold `fold` of a k-fold split of `ids` (see [`SplitSpec::KFold`]). Folds differ in
    /// size by at most one.
    pub fn kfold(ids: &[u32], k: usize, fold: usize, seed: u64, with_val: bool) -> Result<Self> {
        let builtin = || PathBuf::from("<k-fold>");
        if k < 2 || fold >= k {
            return Err(DataError::InvalidSplit {
                path: builtin(),
                reason: format!("need k >= 2 and fold < k, got k = {k}, fold = {fold}"),
            });
        }
        let mut ids: Vec<u32> = ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if ids.len() < k {
            return Err(DataError::InvalidSplit {
                path: builtin(),
                reason: format!("{} patients cannot make {k} folds", ids.len()),
            });
        }
        ids.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let fold_of = |i: usize| i * k / ids.len();
        let val_fold = (fold + 1) % k;
        let mut s = Split {
            train: vec![],
            val: vec![],
            test: vec![],
        };
        for (i, &id) in ids.iter().enumerate() {
            let f = fold_of(i);
            if f == fold {
                s.test.push(id);
            } else if with_val && f == val_fold {
                s.val.push(id);
            } else {
                s.train.push(id);
            }
        }
        s.train.sort_unstable();
        s.val.sort_unstable();
        s.test.sort_unstable();
        Ok(s)
    }

    /// Builds the split a spec describes; `available` are the ids k-fold draws from.
    pub fn from_spec(spec: &SplitSpec, available: &[u32]) -> Result<Self> {
        match spec {
            SplitSpec::TransUnet => Ok(Self::transunet()),
            SplitSpec::KFold {
                k,
                fold,
                seed,
                with_val,
            } => Self::kfold(available, *k, *fold, *seed, *with_val),
            SplitSpec::File(p) => Self::read(p),
        }
    }

    /// Parses split-file text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |reason: String| DataError::InvalidSplit {
            path: path.to_path_buf(),
            reason,
        };
        let mut parts: [Option<Vec<u32>>; 3] = [None, None, None];
        let mut current: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("");
            if line.trim().is_empty() {
                continue;
            }
            let continues = line.starts_with(char::is_whitespace) && current.is_some();
            let values = if continues {
                line
            } else {
                let (key, rest) = line.split_once(':').ok_or_else(|| {
                    err(format!(
                        "line {}: expected `train:`, `val:` or `test:`",
                        n + 1
                    ))
                })?;
                let idx = match key.trim().to_ascii_lowercase().as_str() {
                    "train" | "training" => 0,
                    "val" | "valid" | "validation" => 1,
                    "test" | "testing" => 2,
                    other => return Err(err(format!("line {}: unknown part `{other}`", n + 1))),
                };
                if parts[idx].is_some() {
                    return Err(err(format!(
                        "line {}: part `{}` given twice",
                        n + 1,
                        key.trim()
                    )));
                }
                parts[idx] = Some(Vec::new());
                current = Some(idx);
                rest
            };
            let idx = current.expect("set above");
            for tok in values
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
            {
                let id = parse_patient_name(tok)
                    .ok_or_else(|| err(format!("line {}: {tok:?} is not a patient id", n + 1)))?;
                parts[idx].as_mut().expect("set above").push(id);
            }
        }
        let [train, val, test] = parts;
        let split = Split {
            train: train.ok_or_else(|| err("no `train:` line".into()))?,
            val: val.unwrap_or_default(),
            test: test.unwrap_or_default(),
        };
        split.check_disjoint().map_err(err)?;
        Ok(split)
    }

    /// Reads a split file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Renders the split in the file format (`patientNNN` names).
    pub fn to_file_string(&self) -> String {
        let line = |name: &str, ids: &[u32]| {
            let names: Vec<String> = ids.iter().map(|&i| patient_name(i)).collect();
            format!("{name}: {}\n", names.join(" "))
        };
        let mut s = line("train", &self.train);
        s += &line("val", &self.val);
        s += &line("test", &self.test);
        s
    }

    /// Writes the split file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_file_string().as_bytes())
    }

    /// Checks that no id appears twice.
    fn check_disjoint(&self) -> std::result::Result<(), String> {
        let mut seen = BTreeSet::new();
        for (name, ids) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            for &id in ids {
                if !seen.insert(id) {
                    return Err(format!(
                        "{} appears twice (again in `{name}`)",
                        patient_name(id)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that every id of the split is among `available` (e.g. a dataset's ids).
    pub fn check_available(&self, available: &[u32], source: &Path) -> Result<()> {
        let have: BTreeSet<u32> = available.iter().copied().collect();
        let missing: Vec<String> = self
            .train
            .iter()
            .chain(&self.val)
            .chain(&self.test)
            .filter(|id| !have.contains(id))
            .map(|&id| patient_name(id))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DataError::InvalidSplit {
                path: source.to_path_buf(),
                reason: format!("patients not in the dataset: {}", missing.join(" ")),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transunet_split_has_70_10_20_disjoint() {
        let s = Split::transunet();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (70, 10, 20));
        s.check_disjoint().unwrap();
        assert!(s.test.contains(&2) && s.val.contains(&19) && s.train.contains(&1));
    }

    #[test]
    fn kfold_partitions_ids() {
        let ids: Vec<u32> = (1..=23).collect();
        let mut tests = BTreeSet::new();
        for fold in 0..5 {
            let s = Split::kfold(&ids, 5, fold, 7, true).unwrap();
            s.check_disjoint().unwrap();
            assert_eq!(s.train.len() + s.val.len() + s.test.len(), 23);
            assert!((4..=5).contains(&s.test.len()));
            for &t in &s.test {
                assert!(tests.insert(t), "patient {t} in two test folds");
            }
        }
        assert_eq!(tests.len(), 23);
        assert!(Split::kfold(&ids, 1, 0, 0, false).is_err());
        assert!(Split::kfold(&ids, 3, 3, 0, false).is_err());
    }

    #[test]
    fn split_file_round_trip_and_errors() {
        let p = Path::new("split.txt");
        let s = Split::parse("# c\ntrain: patient001 4, 5\n  6\nval: 007\ntest: 2 3\n", p).unwrap();
        assert_eq!(s.train, vec![1, 4, 5, 6]);
        assert_eq!(s.val, vec![7]);
        assert_eq!(s.test, vec![2, 3]);
        assert_eq!(Split::parse(&s.to_file_string(), p).unwrap(), s);
        let e = Split::parse("train: 1 2\ntest: 2\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("split.txt") && e.contains("patient002 appears twice"),
            "{e}"
        );
        let e = Split::parse("train: 1 x9\n", p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("x9"), "{e}");
        assert!(Split::parse("val: 1\n", p).is_err());
    }
}
