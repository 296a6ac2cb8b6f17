//! ACDC layout reader, Info.cfg parsing, dataset check, and the synthetic cohort read
//! back through the same reader.

use std::path::{Path, PathBuf};

use ndarray::Array3;
use slimseg_data::acdc::{AcdcDataset, Group, PatientInfo, Phase, Subset, check_dataset};
use slimseg_data::nii::{self, GzLevel};
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_data::{DataError, split::Split};

/// A fresh temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

fn tmpdir(name: &str) -> TempDir {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-acdc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

#[test]
fn info_cfg_tolerates_whitespace_order_and_case() {
    let p = Path::new("/x/Info.cfg");
    let text = "  Weight :  76.5 \r\nnbframe: 30\n\nGroup:   dcm\nES:12\n  ED: 1\nHeight: 180.0\n";
    let i = PatientInfo::parse(text, p).unwrap();
    assert_eq!((i.ed, i.es, i.nb_frame), (1, 12, 30));
    assert_eq!(i.group, Some(Group::Dcm));
    assert_eq!((i.height, i.weight), (180.0, 76.5));
    assert_eq!(PatientInfo::parse(&i.to_cfg_string(), p).unwrap(), i);
    // The 2017 testing release had no Group line.
    let j = PatientInfo::parse("ED: 2\nES: 9\nHeight: 170\nNbFrame: 20\nWeight: 60\n", p).unwrap();
    assert_eq!(j.group, None);
    assert_eq!(j.frame(Phase::ED), 2);
}

#[test]
fn malformed_info_cfg_gives_typed_errors_naming_the_file() {
    let p = Path::new("/data/patient007/Info.cfg");
    let cases = [
        (
            "ES: 12\nGroup: NOR\nHeight: 1\nNbFrame: 30\nWeight: 1\n",
            "missing key `ED`",
        ),
        (
            "ED: one\nES: 12\nGroup: NOR\nHeight: 1\nNbFrame: 30\nWeight: 1\n",
            "`ED` must be a number",
        ),
        (
            "ED: 1.5\nES: 12\nHeight: 1\nNbFrame: 30\nWeight: 1\n",
            "non-negative integer",
        ),
        (
            "ED: 1\nES: 31\nHeight: 1\nNbFrame: 30\nWeight: 1\n",
            "ES is frame 31",
        ),
        (
            "ED: 1\nES: 2\nGroup: XYZ\nHeight: 1\nNbFrame: 30\nWeight: 1\n",
            "unknown Group",
        ),
        (
            "ED: 1\nES: 2\nHeight: nan\nNbFrame: 30\nWeight: 1\n",
            "`Height` must be a number",
        ),
        ("ED 1\n", "line 1"),
        ("ED: 1\nED: 2\n", "duplicate key"),
    ];
    for (text, want) in cases {
        let e = PatientInfo::parse(text, p).unwrap_err();
        assert!(matches!(e, DataError::InvalidInfo { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("patient007/Info.cfg") && msg.contains(want),
            "{msg} lacks {want}"
        );
    }
}

#[test]
fn synthetic_cohort_loads_through_the_acdc_reader() {
    let root = tmpdir("cohort");
    let cfg = SynthConfig::small(5, 2, 42);
    let summary = generate(&root, &cfg).unwrap();
    assert_eq!(summary.patients, 7);
    let ds = AcdcDataset::open(&root).unwrap();
    assert_eq!(ds.ids(), vec![1, 2, 3, 4, 5, 101, 102]);
    assert_eq!(ds.subset(Subset::Testing).count(), 2);
    let groups: Vec<Group> = ds
        .subset(Subset::Training)
        .map(|p| p.info.group.unwrap())
        .collect();
    assert_eq!(groups, Group::ACDC_ORDER.to_vec());
    for p in &ds.patients {
        for phase in Phase::BOTH {
            let f = p.load_labelled_frame(phase).unwrap();
            let l = f.labels.as_ref().unwrap();
            assert_eq!(l.data.dim(), f.image.data.dim());
            assert!((6..=8).contains(&f.image.data.shape()[0]));
            assert_eq!(l.affine(), f.image.affine());
            // Every class is present in every labelled volume.
            for c in 1..=3u8 {
                assert!(
                    l.data.iter().any(|&v| v == c),
                    "{} {phase:?} lacks class {c}",
                    p.name()
                );
            }
            assert!(f.image.data.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
    }
    let check = check_dataset(&root, false).unwrap();
    assert!(check.is_ok(), "{check}");
    assert_eq!(check.frames.len(), 14);
    // LV shrinks from ED to ES; myocardial volume is about conserved.
    let ed = check.volume_stats(Phase::ED);
    let es = check.volume_stats(Phase::ES);
    assert!(es[3].0 < 0.8 * ed[3].0, "LV ED {:?} ES {:?}", ed[3], es[3]);
    assert!(es[1].0 < ed[1].0, "RV ED {:?} ES {:?}", ed[1], es[1]);
    assert!(
        (es[2].0 / ed[2].0 - 1.0).abs() < 0.25,
        "MYO ED {:?} ES {:?}",
        ed[2],
        es[2]
    );
    let frames = ds.load_labelled_frames(&[1, 101]).unwrap();
    assert_eq!(frames.len(), 4);
    assert!(
        Split::transunet()
            .check_available(&ds.ids(), Path::new("<transunet>"))
            .is_err()
    );
}

#[test]
fn synthetic_cohort_is_deterministic_per_seed() {
    let read_all = |root: &Path| -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["training", "testing"] {
            let dir = root.join(sub);
            if !dir.exists() {
                continue;
            }
            let mut pats: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            pats.sort();
            for p in pats {
                let mut files: Vec<_> = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                files.sort();
                for f in files {
                    out.push((
                        f.strip_prefix(root).unwrap().display().to_string(),
                        std::fs::read(&f).unwrap(),
                    ));
                }
            }
        }
        out
    };
    let mut cfg = SynthConfig::small(2, 0, 9);
    cfg.write_4d = true;
    let (a, b, c) = (tmpdir("det-a"), tmpdir("det-b"), tmpdir("det-c"));
    generate(&a, &cfg).unwrap();
    generate(&b, &cfg).unwrap();
    generate(
        &c,
        &SynthConfig {
            seed: 10,
            ..cfg.clone()
        },
    )
    .unwrap();
    let (fa, fb, fc) = (read_all(&a), read_all(&b), read_all(&c));
    assert_eq!(fa.len(), 2 * 6);
    assert!(fa == fb, "same seed must give identical files");
    assert!(fa != fc, "another seed must give other files");
    // The 4D file holds NbFrame frames, and its ED frame equals the ED file.
    let ds = AcdcDataset::open(&a).unwrap();
    let p = &ds.patients[0];
    let v4 = p.load_4d().unwrap();
    let ed = p.load_frame(Phase::ED).unwrap();
    let k = (p.info.ed - 1) as usize;
    let ed_file_order = v4.data.index_axis(ndarray::Axis(0), k);
    assert_eq!(ed.orientation.to_canonical(ed_file_order), ed.image.data);
}

#[test]
fn layout_problems_are_reported() {
    let root = tmpdir("layout");
    let e = AcdcDataset::open(&root).unwrap_err();
    assert!(matches!(e, DataError::Layout { .. }), "{e:?}");
    generate(&root, &SynthConfig::small(2, 0, 1)).unwrap();
    let pdir = root.join("training/patient002");
    let info = PatientInfo::read(&pdir.join("Info.cfg")).unwrap();
    // Labels on a different grid than the image.
    let img =
        nii::read_volume(&pdir.join(format!("patient002_frame{:02}.nii.gz", info.es))).unwrap();
    let (z, y, x) = img.data.dim();
    let mut h = img.header.clone();
    h.dim[1] = (x - 1) as i16;
    let gt = pdir.join(format!("patient002_frame{:02}_gt.nii.gz", info.es));
    nii::write_volume(
        &gt,
        Array3::<u8>::zeros((z, y, x - 1)).view(),
        &h,
        GzLevel::Fast,
    )
    .unwrap();
    let ds = AcdcDataset::open(&root).unwrap();
    let e = ds.patient(2).unwrap().load_frame(Phase::ES).unwrap_err();
    assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e:?}");
    let check = check_dataset(&root, false).unwrap();
    assert_eq!(check.problems.len(), 1);
    assert!(
        check.problems[0].contains("patient002_frame"),
        "{}",
        check.problems[0]
    );
    // A broken Info.cfg stops discovery with an error naming it.
    std::fs::write(pdir.join("Info.cfg"), "ED: x\n").unwrap();
    let e = AcdcDataset::open(&root).unwrap_err();
    assert!(e.to_string().contains("patient002/Info.cfg"), "{e}");
}

/// Best Dice that a single intensity window [lo, hi] (chosen with the ground truth, over
/// 64 bins of the volume's range) reaches for `class`.
fn oracle_window_dice(image: &Array3<f32>, labels: &Array3<u8>, class: u8) -> f64 {
    let (lo, hi) = image
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    const B: usize = 64;
    let mut inside = [0u64; B];
    let mut other = [0u64; B];
    for (&v, &l) in image.iter().zip(labels.iter()) {
        let b = (((v - lo) / (hi - lo).max(1e-6)) * B as f32).min(B as f32 - 1.0) as usize;
        if l == class {
            inside[b] += 1;
        } else {
            other[b] += 1;
        }
    }
    let total: u64 = inside.iter().sum();
    let mut best = 0.0f64;
    for a in 0..B {
        let (mut tp, mut fp) = (0u64, 0u64);
        for b in a..B {
            tp += inside[b];
            fp += other[b];
            best = best.max(2.0 * tp as f64 / (tp + fp + total) as f64);
        }
    }
    best
}

#[test]
fn synthetic_classes_are_not_separable_by_intensity_alone() {
    // Even with the best window chosen from the ground truth, intensity alone segments
    // the classes poorly: RV and LV blood share intensities (and with vessels and fat),
    // myocardium shares them with muscle and liver.
    let root = tmpdir("oracle");
    generate(&root, &SynthConfig::small(5, 0, 5)).unwrap();
    let ds = AcdcDataset::open(&root).unwrap();
    let mut sums = [0.0f64; 4];
    let mut n = 0.0;
    for f in ds.load_labelled_frames(&ds.ids()).unwrap() {
        let l = &f.labels.as_ref().unwrap().data;
        for c in 1..=3u8 {
            sums[c as usize] += oracle_window_dice(&f.image.data, l, c);
        }
        n += 1.0;
    }
    let mean = sums.map(|s| s / n);
    eprintln!(
        "oracle window Dice RV {:.3} MYO {:.3} LV {:.3}",
        mean[1], mean[2], mean[3]
    );
    assert!(mean[1] < 0.65, "RV {}", mean[1]);
    assert!(mean[2] < 0.6, "MYO {}", mean[2]);
    assert!(mean[3] < 0.75, "LV {}", mean[3]);
}
