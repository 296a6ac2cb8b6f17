//! slimseg-search: losses, the training engine shared by baseline training, search and
//! fine-tuning, the L1 sparsity of the soft gates, and threshold selection to a
//! [`SubnetSpec`]. See `shared/DESIGN.md`, section Search.
//!
//! - [`config`]: [`RunConfig`] (TOML: `[model]` unchanged plus `[data]`, `[train]`,
//!   `[search]`, `[select]`, `[finetune]`), validated once, unknown keys rejected.
//! - [`loss`]: 0.5 CE + 0.5 Dice (TransUNet's form), direction-field loss, sparsity.
//! - [`optim`]: SGD / AdamW with parameter groups and checkpointable state.
//! - [`engine`]: [`train`], checkpoints every epoch, exact resume, CSV logs, metrics.
//! - [`eval`]: 3D Dice (and HD95) per volume and class.
//! - [`select`]: per-dimension and whole-model budgets -> [`SubnetSpec`].
//! - [`stats`]: gate statistics and histograms.
//! - [`data`]: training slices and evaluation volumes of a split.
//! - [`stages`]: the baseline and search stages as used by the CLI.

pub mod bootstrap;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod eval;
pub mod loss;
pub mod optim;
pub mod select;
pub mod stages;
pub mod stats;

pub use config::{RunConfig, SearchConfig, TrainConfig};
pub use engine::{StageDir, TrainData, TrainMetrics, TrainOptions, train};
pub use error::{Error, Result};
pub use eval::{EvalOptions, EvalReport, evaluate};
pub use select::{
    Budget, CostMetric, CostScope, Floors, SelectConfig, SubnetSpec, select, select_with,
};
