//! Run configuration files: presets parse, unknown keys and bad values are named.

use slimseg_search::config::{OptimizerKind, RunConfig};
use slimseg_search::{Budget, CostScope, Error};

fn preset(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../configs/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("preset exists")
}

#[test]
fn tiny_and_paper_presets_parse_with_their_model_tables() {
    let tiny = RunConfig::from_toml_str(&preset("tiny")).expect("tiny parses");
    let df = slimseg_model::PixelHead::DirectionField;
    assert_eq!(
        tiny.model,
        slimseg_model::ModelConfig::tiny().with_pixel_head(df)
    );
    assert_eq!(tiny.train.optimizer, OptimizerKind::Adamw);
    let paper = RunConfig::from_toml_str(&preset("paper")).expect("paper parses");
    assert_eq!(
        paper.model,
        slimseg_model::ModelConfig::paper().with_pixel_head(df)
    );
    assert_eq!(paper.train.optimizer, OptimizerKind::Sgd);
    assert_eq!(paper.train.lr, 0.01);
    assert_eq!(paper.train.momentum, 0.9);
    assert_eq!(paper.train.weight_decay, 1e-4);
    assert_eq!(paper.train.poly_power, 0.9);
    // The paper's budget: 30% fewer parameters and MACs, in both presets.
    for cfg in [&paper, &tiny] {
        assert_eq!(
            cfg.select.budget,
            Budget::Joint {
                params: 0.7,
                macs: 0.7,
                scope: CostScope::Model
            }
        );
    }
    assert_eq!(paper.for_search().train.epochs, 50);
}

#[test]
fn config_round_trips_through_toml() {
    let cfg = RunConfig::from_toml_str(&preset("tiny")).unwrap();
    let again = RunConfig::from_toml_str(&cfg.to_toml_string().unwrap()).unwrap();
    assert_eq!(cfg, again);
}

#[test]
fn unknown_key_is_rejected_and_named() {
    let text = preset("tiny").replace("[train]\n", "[train]\nlearning_rate = 0.1\n");
    let err = RunConfig::from_toml_str(&text).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("learning_rate"), "{err}");
}

#[test]
fn unknown_table_is_rejected_and_named() {
    let text = format!("{}\n[serach]\nw_attn = 1.0\n", preset("tiny"));
    let err = RunConfig::from_toml_str(&text).unwrap_err();
    assert!(err.to_string().contains("serach"), "{err}");
}

#[test]
fn out_of_range_values_name_their_key() {
    let text = preset("tiny").replace("momentum = 0.9", "momentum = 1.5");
    let err = RunConfig::from_toml_str(&text).unwrap_err();
    assert!(err.to_string().contains("train.momentum"), "{err}");
    let text = preset("tiny").replace("macs = 0.7", "macs = 1.7");
    let err = RunConfig::from_toml_str(&text).unwrap_err();
    assert!(err.to_string().contains("select.budget.macs"), "{err}");
    let text = preset("tiny").replace("params = 0.7, macs = 0.7", "metric = \"macs\", keep = 1.7");
    let err = RunConfig::from_toml_str(&text).unwrap_err();
    assert!(err.to_string().contains("select.budget.keep"), "{err}");
    let text = preset("tiny").replace("batch_size = 8", "batch_size = 0");
    let err = RunConfig::from_toml_str(&text).unwrap_err();
    assert!(err.to_string().contains("train.batch_size"), "{err}");
}

#[test]
fn file_errors_name_the_file() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-search-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    // The first `lr = ...` line is the one of [train].
    let text: String = preset("tiny")
        .lines()
        .scan(false, |done, l| {
            let out = if !*done && l.starts_with("lr = ") {
                *done = true;
                "lr = -1.0".to_string()
            } else {
                l.to_string()
            };
            Some(out + "\n")
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    let err = RunConfig::from_toml_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml") && err.contains("train.lr"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_precisions_and_the_profile_table_are_checked_and_named() {
    // The tiny preset's [bench] lists fp32 and bf16.
    let tiny = RunConfig::from_toml_str(&preset("tiny")).unwrap();
    assert_eq!(
        tiny.bench.precisions,
        [
            slimseg_model::Precision::Fp32,
            slimseg_model::Precision::Bf16
        ]
    );
    let err =
        RunConfig::from_toml_str(&preset("tiny").replace("[\"fp32\", \"bf16\"]", "[\"bf16\"]"))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("bench.precisions") && err.contains("fp32"),
        "{err}"
    );
    let err = RunConfig::from_toml_str(
        &preset("tiny").replace("[\"fp32\", \"bf16\"]", "[\"fp32\", \"fp32\"]"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("twice"), "{err}");
    let err =
        RunConfig::from_toml_str(&preset("tiny").replace("[\"fp32\", \"bf16\"]", "[\"fp64\"]"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("fp64"), "{err}");
    // [profile]: defaults, a value, a refusal naming its key.
    assert_eq!(tiny.profile.batch, 1);
    let cfg = format!(
        "{}\n[profile]\nbatch = 8\nprecision = \"bf16\"\n",
        preset("tiny")
    );
    let p = RunConfig::from_toml_str(&cfg).unwrap().profile;
    assert_eq!((p.batch, p.precision), (8, slimseg_model::Precision::Bf16));
    let err = RunConfig::from_toml_str(&format!("{}\n[profile]\nbatch = 0\n", preset("tiny")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("profile.batch"), "{err}");
}
