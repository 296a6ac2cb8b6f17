//! slimseg-model: TransUNet with gated transformer dimensions, the pixel classification
//! module, subnet architectures, parameter/MAC counting, weight import/export and volume
//! inference. See `shared/DESIGN.md`, sections Model and Gates.
//!
//! - [`ModelConfig`]: configuration and the `paper` / `tiny` presets (TOML `[model]`).
//! - [`TransUnet`]: the network; [`GateMode`] and [`SoftGates`] for the three searched
//!   dimensions (attention head dims, MLP units, tokens).
//! - [`SubnetArch`]: kept dims per head, MLP units and tokens per block; hard masks and
//!   physically reduced models are built from it.
//! - [`count`]: analytic parameter and MAC counts per layer and total.
//! - [`weights`]: strict safetensors save/load, official checkpoint and ViT `.npz` import.
//! - [`infer`]: slice-by-slice volume prediction (TransUNet test protocol).
//! - [`profile`]: per-block latency tables for latency budgets.
//! - [`amp`]: autocast in fp16 or bf16 on CPU or CUDA (mixed-precision training).

pub mod amp;
pub mod arch;
pub mod config;
pub mod count;
mod decoder;
pub mod error;
pub mod gates;
pub mod infer;
mod layers;
pub mod pixel;
pub mod profile;
pub mod pth;
mod resnet;
pub mod runtime;
pub mod transunet;
mod vit;
pub mod weights;

pub use arch::{FullDims, LayerArch, SubnetArch, format_indices, parse_indices};
pub use config::{ModelConfig, PixelHead};
pub use error::{Error, Result};
pub use gates::{GATE_PARAM_GROUP, GateMode, GateValues, SoftGates};
pub use infer::{InferenceOptions, Precision};
pub use transunet::{ModelOutput, TransUnet};
