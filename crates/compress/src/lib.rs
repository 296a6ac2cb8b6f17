//! slimseg-compress: turns a searched TransUNet subnet into a physically smaller network.
//! See `shared/DESIGN.md`, sections Gates, Compress and Counting.
//!
//! - [`slice`]: [`compress`] / [`compress_checkpoint`] slice q/k/v rows and biases and
//!   out-projection columns per kept head dims, fc1 rows/bias and fc2 columns per kept
//!   MLP units, fold the kept soft gate values into those weights ([`Folding`]), and build
//!   a [`CompressedModel`] (a reduced `TransUnet` whose blocks gather and scatter their
//!   kept tokens) with trainable variables.
//! - [`store`]: the compressed model on disk — a directory with `model.toml` (config,
//!   kept architecture, counts) and `weights.safetensors`; it loads without the original.
//! - [`equivalence`]: hard-masked full model vs sliced model on the same inputs.
//! - [`latency`]: full vs compressed forward latency on any device, batch sizes of choice.
//! - [`target`]: structured architectures meeting a MAC target, for benchmarks.
//!
//! The input is the model crate's [`SubnetArch`](slimseg_model::SubnetArch) (a search
//! spec wraps one).

pub mod equivalence;
pub mod error;
pub mod latency;
pub mod slice;
pub mod store;
pub mod target;

pub use equivalence::{EquivalenceReport, check_equivalence};
pub use error::{Error, Result};
pub use latency::{
    LatencyOptions, LatencyReport, LatencyRow, LatencyStats, RunTime, bench_full_vs_compressed,
    compare_latency, time_forward, time_models,
};
pub use slice::{CompressedModel, Folding, compress, compress_checkpoint, slice_state};
pub use store::{FORMAT, MANIFEST_FILE, Manifest, Summary, WEIGHTS_FILE};
pub use target::{
    KeepFractions, WeightRanking, arch_for_mac_reduction, structured_arch, uniform_control,
};
