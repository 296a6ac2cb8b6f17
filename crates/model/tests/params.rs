//! Parameter counts and variable names against the official TransUNet.
use slimseg_model::{ModelConfig, TransUnet};
use tch::{Device, nn};

fn trainable_params(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[test]
fn paper_has_official_parameter_count() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = TransUnet::new(&vs.root(), &ModelConfig::paper()).unwrap();
    assert_eq!(trainable_params(&vs), 105_276_356);
}
