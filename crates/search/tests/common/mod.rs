//! Shared fixtures: a tiny synthetic cohort in a temporary directory.
#![allow(dead_code)]

use std::path::PathBuf;

use slimseg_data::pipeline::{Normalization, SliceDataset};
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_search::config::{DeviceChoice, RunConfig};
use slimseg_search::data::{EvalVolume, eval_volumes};

/// A fresh temporary directory (removed by the caller when the test passes).
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-search-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Training slices (the first `n_slices`) and one validation volume of a 2-patient
/// synthetic cohort.
pub fn tiny_data(dir: &std::path::Path, n_slices: usize) -> (SliceDataset, Vec<EvalVolume>) {
    let root = dir.join("data");
    generate(&root, &SynthConfig::small(2, 0, 11)).unwrap();
    let ds = slimseg_data::AcdcDataset::open(&root).unwrap();
    let frames = ds.load_labelled_frames(&[1]).unwrap();
    let mut train = SliceDataset::from_frames(&frames, Normalization::MinMax).unwrap();
    train.slices.truncate(n_slices);
    let val_frames = ds.load_labelled_frames(&[2]).unwrap();
    let val = eval_volumes(&val_frames[..1], Normalization::MinMax).unwrap();
    (train, val)
}

/// The tiny preset on CPU with a small, quiet schedule.
pub fn tiny_config(epochs: usize) -> RunConfig {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/tiny.toml"
    ))
    .unwrap();
    let mut cfg = RunConfig::from_toml_str(&text).unwrap();
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 4;
    cfg.train.device = DeviceChoice::Cpu;
    cfg.train.progress = false;
    cfg.train.val_every = 1;
    cfg.search.epochs = None;
    cfg.search.lr = None;
    cfg
}
