//! Generates a synthetic ACDC cohort, loads it back through the ACDC reader, prints the
//! timing and per-class volume statistics at ED and ES, and writes a PNG of one slice.
//!
//! `cargo run --release -p slimseg-data --example synth_cohort -- <root> [training] [testing] [png]`
//! (`SYNTH_NO_4D=1` to skip the 4D files).

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Axis;
use slimseg_data::acdc::{AcdcDataset, Phase, check_dataset};
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_data::viz::write_slice_png;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The cohort folder must not exist or be empty; the default is new for every run.
    let root = args.first().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("slimseg-synth-{}", std::process::id()))
    });
    let training = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let testing = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let png = PathBuf::from(
        args.get(3)
            .map(String::as_str)
            .unwrap_or("/tmp/slimseg-synth-slice.png"),
    );
    // SYNTH_NO_4D=1 skips the 4D cine files (ED/ES frames and labels only).
    let cfg = SynthConfig {
        training,
        testing,
        write_4d: std::env::var("SYNTH_NO_4D").is_err(),
        ..SynthConfig::default()
    };
    println!("threads: {}", rayon::current_num_threads());
    let summary = generate(&root, &cfg)?;
    println!(
        "generated {} patients, {} files, {:.1} MB in {:.2} s",
        summary.patients,
        summary.files,
        summary.bytes as f64 / 1e6,
        summary.seconds
    );
    let t = Instant::now();
    let check = check_dataset(&root, cfg.write_4d)?;
    println!(
        "checked (all ED/ES frames + labels, and 4D headers when written) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    println!("{check}");
    let ds = AcdcDataset::open(&root)?;
    let p = &ds.patients[0];
    let frame = p.load_labelled_frame(Phase::ED)?;
    let labels = frame.labels.as_ref().expect("labelled");
    let z = frame.image.data.shape()[0] / 2;
    write_slice_png(
        &png,
        frame.image.data.index_axis(Axis(0), z),
        labels.data.index_axis(Axis(0), z),
    )?;
    println!(
        "slice z={z} of {} ED written to {}",
        p.name(),
        png.display()
    );
    Ok(())
}
