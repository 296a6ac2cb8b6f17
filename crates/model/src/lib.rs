//! slimseg-model: TransUNet with gated transformer dimensions, the pixel classification
//! module, subnet architectures, parameter/MAC counting, weight import/export and volume
//! inference. See `shared/DESIGN.md`, sections Model and Gates.

pub mod runtime;
