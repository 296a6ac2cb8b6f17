//! `slimseg`: compress transformer segmentation models for cardiac MRI.
//!
//! One subcommand per pipeline stage; `doctor` reports the runtime the tool sees.

mod data_cmd;
mod doctor;

use clap::{Parser, Subcommand};

/// Command-line interface of slimseg.
#[derive(Debug, Parser)]
#[command(name = "slimseg", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the slimseg and libtorch versions, where libtorch was loaded from, CPU threads
    /// and CUDA / cuDNN availability.
    Doctor,
    /// Dataset stages: generate a synthetic cohort, validate an ACDC tree.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Shape, datatype, spacing, orientation and affine of a NIfTI file.
    VolumeInfo(data_cmd::VolumeInfoArgs),
}

fn main() -> anyhow::Result<()> {
    // Die quietly like other Unix tools when the reader of our output goes away
    // (`slimseg doctor | head`), instead of panicking on the broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before anything asks libtorch about CUDA: load its CUDA backend if it can be loaded.
    slimseg_model::runtime::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor => doctor::run(),
        Command::Data(command) => data_cmd::run(command),
        Command::VolumeInfo(args) => data_cmd::volume_info(args),
    }
}
