//! Configuration presets, TOML files and the subnet architecture type.
mod common;

use proptest::prelude::*;
use rand::SeedableRng;
use slimseg_model::{LayerArch, ModelConfig, PixelHead, SubnetArch, format_indices, parse_indices};

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn config_files_equal_presets_with_the_pixel_module() {
    // The files are DFTransUnet, the paper's model: the presets with the module on.
    let df = PixelHead::DirectionField;
    assert_eq!(
        ModelConfig::from_toml_file(repo_file("configs/paper.toml")).unwrap(),
        ModelConfig::paper().with_pixel_head(df)
    );
    assert_eq!(
        ModelConfig::from_toml_file(repo_file("configs/tiny.toml")).unwrap(),
        ModelConfig::tiny().with_pixel_head(df)
    );
    assert_eq!(ModelConfig::preset("tiny").unwrap(), ModelConfig::tiny());
    assert!(ModelConfig::preset("huge").is_err());
}

#[test]
fn config_roundtrips_and_nests_as_model_table() {
    let cfg = ModelConfig::tiny().with_pixel_head(PixelHead::DirectionField);
    let s = cfg.to_toml_string().unwrap();
    assert!(
        s.contains("[model]") && s.contains("pixel_head = \"direction-field\""),
        "{s}"
    );
    assert_eq!(ModelConfig::from_toml_str(&s).unwrap(), cfg);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-model-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.toml");
    cfg.save_toml(&path).unwrap();
    assert_eq!(ModelConfig::from_toml_file(&path).unwrap(), cfg);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_configs_name_the_field() {
    let cases = [
        (
            ModelConfig {
                img_size: 100,
                ..ModelConfig::tiny()
            },
            "img_size",
        ),
        (
            ModelConfig {
                heads: 5,
                ..ModelConfig::tiny()
            },
            "heads",
        ),
        (
            ModelConfig {
                resnet_width: 10,
                ..ModelConfig::tiny()
            },
            "resnet_width",
        ),
        (
            ModelConfig {
                n_skip: 4,
                ..ModelConfig::tiny()
            },
            "n_skip",
        ),
        (
            ModelConfig {
                dropout: 1.5,
                ..ModelConfig::tiny()
            },
            "dropout",
        ),
    ];
    for (cfg, field) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    let s = ModelConfig::tiny()
        .to_toml_string()
        .unwrap()
        .replace("hidden = 192", "hidden = 192\nwidth = 3");
    let err = ModelConfig::from_toml_str(&s).unwrap_err().to_string();
    assert!(err.contains("width"), "{err}");
}

#[test]
fn arch_check_rejects_bad_indices() {
    let cfg = ModelConfig::tiny();
    let full = SubnetArch::full(&cfg);
    assert!(full.check(&cfg).is_ok() && full.is_full());
    let mut a = full.clone();
    a.layers[1].head_dims[2] = vec![0, 32];
    assert!(
        a.check(&cfg)
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
    let mut a = full.clone();
    a.layers[0].tokens = vec![1, 1];
    assert!(a.check(&cfg).unwrap_err().to_string().contains("ascending"));
    let mut a = full.clone();
    a.layers.pop();
    assert!(a.check(&cfg).is_err());
    let mut a = full.clone();
    a.layers[0].head_dims.pop();
    assert!(a.check(&cfg).is_err());
    assert!(full.check(&ModelConfig::paper()).is_err());
}

#[test]
fn arch_widths_and_fractions() {
    let la = LayerArch {
        head_dims: vec![vec![0, 3], vec![], vec![1]],
        mlp_units: vec![0, 5],
        tokens: vec![2],
    };
    assert_eq!(la.head_widths(), vec![2, 0, 1]);
    assert_eq!(la.attn_width(), 3);
    assert_eq!(la.attn_flat_indices(4), vec![0, 3, 9]);
    let cfg = ModelConfig::tiny();
    let mut a = SubnetArch::full(&cfg);
    for l in &mut a.layers {
        l.mlp_units.truncate(cfg.mlp_dim / 2);
    }
    let (att, mlp, tok) = a.kept_fractions();
    assert_eq!((att, mlp, tok), (1.0, 0.5, 1.0));
    assert!(!a.is_full());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn arch_toml_roundtrip(seed in any::<u64>()) {
        let cfg = ModelConfig::tiny();
        let arch = common::random_arch(&cfg, &mut rand::rngs::StdRng::seed_from_u64(seed));
        prop_assert!(arch.check(&cfg).is_ok());
        let s = arch.to_toml_string().unwrap();
        prop_assert!(s.contains("[[layers]]"));
        prop_assert_eq!(SubnetArch::from_toml_str(&s).unwrap(), arch);
    }
}

#[test]
fn arch_file_roundtrip() {
    let cfg = ModelConfig::paper();
    let arch = SubnetArch::full(&cfg);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slimseg-model-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("arch.toml");
    arch.save_toml(&path).unwrap();
    assert_eq!(SubnetArch::load_toml(&path).unwrap(), arch);
    std::fs::write(&path, "full = 3").unwrap();
    let err = SubnetArch::load_toml(&path).unwrap_err().to_string();
    assert!(err.contains("arch.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn index_lists_are_written_as_ranges_and_read_from_either_form() {
    assert_eq!(format_indices(&[0, 1, 2, 3, 5, 7, 8]), "0-3,5,7,8");
    assert_eq!(format_indices(&[]), "");
    assert_eq!(
        parse_indices(" 0-3, 5,7,8 ").unwrap(),
        vec![0, 1, 2, 3, 5, 7, 8]
    );
    assert!(parse_indices("4-2").is_err() && parse_indices("1,x").is_err());
    let cfg = ModelConfig::tiny();
    let mut arch = SubnetArch::full(&cfg);
    arch.layers[0].head_dims[1] = vec![0, 2, 3, 4];
    arch.layers[1].tokens.clear();
    let s = arch.to_toml_string().unwrap();
    assert!(
        s.contains(r#"head_dims = ["0-31", "0,2-4", "0-31", "0-31", "0-31", "0-31"]"#),
        "{s}"
    );
    assert!(
        s.contains(r#"tokens = """#) && s.contains(r#"mlp_units = "0-767""#),
        "{s}"
    );
    assert_eq!(SubnetArch::from_toml_str(&s).unwrap(), arch);
    // Integer arrays are accepted too.
    let arrays = s.replacen(
        r#"mlp_units = "0-767""#,
        &format!("mlp_units = {:?}", (0..768).collect::<Vec<_>>()),
        1,
    );
    assert_eq!(SubnetArch::from_toml_str(&arrays).unwrap(), arch);
    let bad = s.replacen(r#"mlp_units = "0-767""#, r#"mlp_units = "0-x""#, 1);
    assert!(
        SubnetArch::from_toml_str(&bad)
            .unwrap_err()
            .to_string()
            .contains("0-x")
    );
}
