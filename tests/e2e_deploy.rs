//! End-to-end tests of deployment through the `slimseg` binary: `export` (TorchScript and
//! a Triton repository, loaded back with `tch::CModule`), folder and 4D `predict`, and
//! `evaluate` of a predictions folder against ground truth.

mod common;

use std::path::Path;

use common::{fails, finished_run, json, ok, scratch, strs, text};
use tch::{Device, Kind, Tensor};

#[test]
fn exported_modules_give_slimseg_logits_at_any_batch_size() {
    let dir = scratch("deploy-export");
    let run = finished_run(&dir);
    let r = run.to_str().unwrap();
    let out = dir.join("ts");
    let o = out.to_str().unwrap();
    ok(&["export", "--run", r, "--stage", "compressed", "-o", o]);
    let manifest = json(&out.join("manifest.json"));
    assert_eq!(
        manifest["input"]["shape"],
        serde_json::json!([-1, 1, 96, 96])
    );
    assert_eq!(
        manifest["output"]["shape"],
        serde_json::json!([-1, 4, 96, 96])
    );
    let status = json(&run.join("compressed/stage.json"));
    assert_eq!(manifest["fingerprint"], status["id"]);
    assert_eq!(
        manifest["inference"],
        serde_json::json!({"precision": "fp32", "fast_paths": true})
    );
    assert_eq!(
        manifest["classes"],
        serde_json::json!(["BG", "RV", "MYO", "LV"])
    );

    // Loaded back here, at batch sizes other than the traced one.
    let module = tch::CModule::load_on_device(out.join("model.pt"), Device::Cpu).unwrap();
    let ours =
        slimseg_compress::CompressedModel::load(run.join("compressed"), Device::Cpu).unwrap();
    let _guard = tch::no_grad_guard();
    for b in [1, 5] {
        let x = Tensor::rand([b, 1, 96, 96], (Kind::Float, Device::Cpu));
        let want = ours.model.forward_t(&x, false).unwrap().logits;
        let got = module.forward_ts(&[&x]).unwrap();
        assert_eq!(got.size(), want.size());
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "batch {b}: max |diff| {diff}");
    }

    // Not over an existing folder unless asked; never over the run, the working
    // directory or a folder that is not an earlier export, even when asked.
    fails(
        &["export", "--run", r, "--stage", "compressed", "-o", o],
        &["exists", "--overwrite"],
    );
    ok(&[
        "export",
        "--run",
        r,
        "--stage",
        "compressed",
        "-o",
        o,
        "--overwrite",
    ]);
    let inside = run.join("exported");
    for bad in [inside.as_path(), run.as_path(), Path::new("/")] {
        fails(
            &[
                "export",
                "--run",
                r,
                "-o",
                bad.to_str().unwrap(),
                "--overwrite",
            ],
            &["would replace or contain the run directory"],
        );
    }
    let foreign = dir.join("photos");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("a.jpg"), b"x").unwrap();
    fails(
        &[
            "export",
            "--run",
            r,
            "-o",
            foreign.to_str().unwrap(),
            "--overwrite",
        ],
        &["not an earlier output"],
    );
    assert!(foreign.join("a.jpg").is_file());

    // A Triton repository of the fine-tuned model.
    let repo = dir.join("repo");
    ok(&[
        "export",
        "--run",
        r,
        "-o",
        repo.to_str().unwrap(),
        "--format",
        "triton",
        "--name",
        "heart",
        "--max-batch",
        "8",
    ]);
    assert!(repo.join("heart/1/model.pt").is_file());
    let cfg = std::fs::read_to_string(repo.join("heart/config.pbtxt")).unwrap();
    for needle in [
        "name: \"heart\"",
        "platform: \"pytorch_libtorch\"",
        "max_batch_size: 8",
        "name: \"INPUT__0\"",
        "dims: [ 1, 96, 96 ]",
        "name: \"OUTPUT__0\"",
        "dims: [ 4, 96, 96 ]",
        "TYPE_FP32",
    ] {
        assert!(cfg.contains(needle), "config.pbtxt lacks {needle}:\n{cfg}");
    }

    // The full baseline, whose large linears take the oneDNN path: its traced module
    // takes other batch sizes than the traced one (the round trip runs at batch 3).
    ok(&[
        "export",
        "--run",
        r,
        "--stage",
        "baseline",
        "-o",
        dir.join("full").to_str().unwrap(),
    ]);

    // In bf16: the module computes in bf16 between float32 input and output, close to
    // the float32 model; fp16 is refused on the CPU.
    let half = dir.join("bf16");
    ok(&[
        "export",
        "--run",
        r,
        "--stage",
        "compressed",
        "-o",
        half.to_str().unwrap(),
        "--precision",
        "bf16",
    ]);
    let manifest = json(&half.join("manifest.json"));
    assert_eq!(manifest["inference"]["precision"], "bf16");
    assert_eq!(manifest["output"]["dtype"], "float32");
    let module = tch::CModule::load_on_device(half.join("model.pt"), Device::Cpu).unwrap();
    {
        let _guard = tch::no_grad_guard();
        let x = Tensor::rand([2, 1, 96, 96], (Kind::Float, Device::Cpu));
        let want = ours.model.forward_t(&x, false).unwrap().logits;
        let got = module.forward_ts(&[&x]).unwrap();
        assert_eq!(got.kind(), Kind::Float);
        let scale = want.abs().max().double_value(&[]);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(
            diff > 0.0 && diff < 0.05 * scale,
            "bf16 differs by {diff} at {scale}"
        );
    }
    fails(
        &[
            "export",
            "--run",
            r,
            "-o",
            dir.join("fp16").to_str().unwrap(),
            "--precision",
            "fp16",
        ],
        &["fp16 runs on CUDA only"],
    );

    // A stage that is not up to date is not exported.
    ok(&["compress", "--run", r, "--force", "--target-macs", "0.5"]);
    fails(
        &[
            "export",
            "--run",
            r,
            "-o",
            dir.join("stale").to_str().unwrap(),
        ],
        &["finetuned stage is not complete and up to date"],
    );
    assert!(!dir.join("stale").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn folder_predict_then_evaluate_equals_the_stage_evaluation() {
    let dir = scratch("deploy-folder");
    let run = finished_run(&dir);
    let r = run.to_str().unwrap();
    let input = dir.join("in");
    let gt = dir.join("gt");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    let patient = run.join("data/testing/patient101");
    for e in std::fs::read_dir(&patient).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with("_gt.nii.gz") {
            std::fs::copy(&p, gt.join(&name)).unwrap();
        } else if let Some(stem) = name.strip_suffix(".nii.gz") {
            std::fs::copy(&p, input.join(format!("{stem}_0000.nii.gz"))).unwrap();
        }
    }
    // A 4D cine volume from another cohort.
    let other = dir.join("other");
    common::synth_cohort(&other, 1234);
    let cine = other.join("testing/patient101/patient101_4d.nii.gz");
    std::fs::copy(&cine, input.join("cine.nii.gz")).unwrap();

    let out = dir.join("out");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    // Exactly as training computes: the stage's own evaluation, bit for bit (below).
    let t = text(&ok(&["predict", "-i", i, "-o", o, "--run", r, "--exact"]));
    assert!(t.contains("3 segmented, 0 skipped"), "{t}");
    assert!(t.contains("model loaded once (fp32, exact)"), "{t}");
    for f in [
        "patient101_frame01.nii.gz",
        "patient101_frame06.nii.gz",
        "cine.nii.gz",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let cine_in = common::json_stdout(&["volume-info", "--json", cine.to_str().unwrap()]);
    let cine_out = common::json_stdout(&[
        "volume-info",
        "--json",
        out.join("cine.nii.gz").to_str().unwrap(),
    ]);
    assert_eq!(cine_in["shape"], cine_out["shape"]);
    assert_eq!(cine_in["affine"], cine_out["affine"]);
    assert_eq!(cine_out["datatype"], "uint8");
    // Again: every output exists, nothing is redone.
    let t = text(&ok(&["predict", "-i", i, "-o", o, "--run", r]));
    assert!(t.contains("0 segmented, 3 skipped"), "{t}");

    // evaluate: the 3D predictions score what the stage's eval.json says.
    std::fs::remove_file(out.join("cine.nii.gz")).unwrap();
    let summary = dir.join("summary.json");
    ok(&[
        "evaluate",
        "--pred",
        o,
        "--gt",
        gt.to_str().unwrap(),
        "-o",
        summary.to_str().unwrap(),
    ]);
    let s = json(&summary);
    let e = json(&run.join("finetuned/eval.json"));
    assert_eq!(s["metric_per_case"].as_array().unwrap().len(), 2);
    assert_eq!(s["convention"]["name"], "transunet");
    for (k, label) in ["1", "2", "3"].iter().enumerate() {
        let a = s["mean"][label]["Dice"].as_f64().unwrap();
        let b = e["mean_dice_per_class"][k].as_f64().unwrap();
        assert!((a - b).abs() < 1e-12, "label {label}: {a} vs {b}");
        let a = s["mean"][label]["HD95_mm"].as_f64().unwrap();
        let b = e["mean_hd95_mm_per_class"][k].as_f64().unwrap();
        assert!((a - b).abs() < 1e-12, "label {label}: HD95 {a} vs {b}");
        let case = &s["metric_per_case"][0]["metrics"][label];
        let (tp, fp, fn_) = (
            case["TP"].as_f64().unwrap(),
            case["FP"].as_f64().unwrap(),
            case["FN"].as_f64().unwrap(),
        );
        if tp + fp + fn_ > 0.0 {
            let iou = case["IoU"].as_f64().unwrap();
            assert!((iou - tp / (tp + fp + fn_)).abs() < 1e-12);
        }
    }
    assert!(s["foreground_mean"]["Dice"].is_number());

    // A reference on another grid is an error naming both files.
    let bad_gt = dir.join("bad-gt");
    std::fs::create_dir_all(&bad_gt).unwrap();
    std::fs::copy(
        other.join("testing/patient101/patient101_frame01_gt.nii.gz"),
        bad_gt.join("patient101_frame01_gt.nii.gz"),
    )
    .unwrap();
    std::fs::copy(
        gt.join("patient101_frame06_gt.nii.gz"),
        bad_gt.join("patient101_frame06_gt.nii.gz"),
    )
    .unwrap();
    fails(
        &["evaluate", "--pred", o, "--gt", bad_gt.to_str().unwrap()],
        &[
            "out/patient101_frame01.nii.gz",
            "bad-gt/patient101_frame01_gt.nii.gz",
            "geometry differs",
        ],
    );
    // A prediction without a reference.
    std::fs::remove_file(bad_gt.join("patient101_frame01_gt.nii.gz")).unwrap();
    fails(
        &["evaluate", "--pred", o, "--gt", bad_gt.to_str().unwrap()],
        &["patient101_frame01.nii.gz", "no reference"],
    );
    // Another channel of a multi-channel case is refused before anything runs.
    std::fs::copy(
        input.join("patient101_frame01_0000.nii.gz"),
        input.join("patient101_frame01_0001.nii.gz"),
    )
    .unwrap();
    fails(
        &[
            "predict",
            "-i",
            i,
            "-o",
            dir.join("o2").to_str().unwrap(),
            "--run",
            r,
        ],
        &["channel 0001", "one channel"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_official_checkpoint_becomes_the_baseline_and_bad_ones_are_refused() {
    let dir = scratch("deploy-import");
    let fixtures = common::workspace().join("tests/fixtures/transunet-micro");
    let config = fixtures.join("config.toml");
    let (pth, nested) = (
        fixtures.join("micro.pth"),
        fixtures.join("micro-nested.pth"),
    );
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    // `import` of `ckpt` into a new run of `config` on the small synthetic cohort.
    let import_new = |ckpt: &Path, config: &Path, run: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "import",
            "--transunet",
            ckpt.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
        ]
        .into_iter()
        .chain(common::SMALL_COHORT)
        .map(String::from)
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let t = text(&ok(&strs(&import_new(&pth, &config, &run, &[]))));
    assert!(t.contains("imported 123 tensors"), "{t}");
    // The baseline holds exactly the checkpoint's values.
    let saved: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(run.join("baseline/best.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for (name, t) in slimseg_model::pth::read_pth(&pth).unwrap() {
        assert!(saved[&name].equal(&t), "{name} differs");
    }
    assert!(run.join("baseline/eval.json").is_file());
    // The rest of the pipeline runs on it.
    ok(&["search", "--run", r]);
    ok(&["compress", "--run", r]);
    let before = common::tree(&run.join("baseline"));

    // Refused files: each error names the file, and the baseline stays as it was.
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"definitely not a zip").unwrap();
    let bytes = std::fs::read(&pth).unwrap();
    let cut = dir.join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let unknown = fixtures.join("micro-unknown-nesting.pth");
    for (file, needle) in [
        (&junk, "not a PyTorch zip checkpoint"),
        (&cut, "cut.pth"),
        (&unknown, "no state_dict"),
    ] {
        fails(
            &[
                "import",
                "--transunet",
                file.to_str().unwrap(),
                "--run",
                r,
                "--force",
            ],
            &[file.file_name().unwrap().to_str().unwrap(), needle],
        );
        assert_eq!(common::tree(&run.join("baseline")), before);
    }
    // A checkpoint of another preset: every name and shape is checked first.
    let tiny = dir.join("tiny-run");
    fails(
        &strs(&import_new(&pth, &common::tiny_config(), &tiny, &[])),
        &["micro.pth", "missing tensors"],
    );
    assert!(!tiny.join("baseline/best.safetensors").exists());
    // Same names, other shapes.
    let narrow = dir.join("narrow-run");
    fails(
        &strs(&import_new(
            &pth,
            &config,
            &narrow,
            &["--set", "model.mlp_dim=48"],
        )),
        &["micro.pth", "shape mismatch", "fc1"],
    );
    assert!(!narrow.join("baseline/best.safetensors").exists());
    // A TransUNet checkpoint into a DFTransUnet run: its pixel module would be untrained.
    let df = dir.join("df-run");
    fails(
        &strs(&import_new(
            &pth,
            &config,
            &df,
            &["--set", "model.pixel_head=direction-field"],
        )),
        &["micro.pth", "has no pixel module", "model.pixel_head=none"],
    );
    assert!(!df.join("baseline/best.safetensors").exists());

    // The same weights inside a checkpoint dict, with DataParallel's prefix: the baseline
    // is redone from the new file, its weights are the same, so the search stays done.
    ok(&[
        "import",
        "--transunet",
        nested.to_str().unwrap(),
        "--run",
        r,
        "--force",
    ]);
    let s = text(&ok(&["status", "--run", r]));
    let line = |stage: &str| {
        s.lines()
            .find(|l| l.starts_with(&format!("{stage} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("baseline").contains(" done "), "{s}");
    assert!(line("search").contains(" done "), "{s}");
    std::fs::remove_dir_all(&dir).unwrap();
}
