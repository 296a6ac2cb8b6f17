//! End-to-end tests of the `slimseg` binary: a scaled-down pipeline (tiny model, a few
//! synthetic patients, one epoch per stage) through `reproduce`, the stage outputs and
//! the report, `predict`'s header/affine, `info`, `bench`, `eval`, a second `reproduce`
//! that skips finished stages, and clear errors for bad inputs.

mod common;

use std::path::Path;

use common::{fails, json, json_stdout, ok, scratch, text, tiny_config, tiny_reproduce_args};

/// Decodes the PNG at `path` whole and returns its size.
fn png_size(path: &Path) -> (u32, u32) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    // Not a blank canvas: text and marks in several shades.
    let shades: std::collections::BTreeSet<&u8> = buf[..frame.buffer_size()].iter().collect();
    assert!(shades.len() > 16, "{} is nearly blank", path.display());
    (frame.width, frame.height)
}

#[test]
fn pipeline_end_to_end() {
    let dir = scratch("pipeline");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let mut args = tiny_reproduce_args(r);
    // Two budgets of a sweep, and the progress output a user gets (stderr is a pipe here).
    for set in ["sweep.keep=[0.8, 0.6]", "train.progress=true"] {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let argv = common::strs(&args);

    // First reproduce: every stage runs.
    let o = ok(&argv);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let log = text(&o);
    assert!(
        !log.contains('\x1b') && !log.contains('\r'),
        "the log of a run whose stderr is not a terminal holds control characters:\n{log:?}"
    );
    assert!(
        log.contains("[train] epoch 1/1 loss"),
        "one line per epoch:\n{log}"
    );
    let report_md = run.join("report/report.md");
    assert_eq!(
        stdout.trim().lines().last().unwrap(),
        format!("report: {}", report_md.display())
    );
    for f in [
        "config.toml",
        "data/synth.json",
        "baseline/best.safetensors",
        "baseline/log.csv",
        "baseline/metrics.json",
        "baseline/eval.json",
        "baseline/stage.json",
        "transunet/best.safetensors",
        "transunet/eval.json",
        "transunet/stage.json",
        "search/weights.safetensors",
        "search/gates_end.json",
        "search/eval.json",
        "compressed/model.toml",
        "compressed/weights.safetensors",
        "compressed/subnet.toml",
        "compressed/equivalence.json",
        "compressed/eval.json",
        "finetuned/model/model.toml",
        "finetuned/model/weights.safetensors",
        "finetuned/log.csv",
        "finetuned/eval.json",
        "finetuned/stage.json",
        "uniform/model/model.toml",
        "uniform/model/weights.safetensors",
        "uniform/uniform.json",
        "uniform/eval.json",
        "uniform/stage.json",
        "bench/latency.json",
        "bench/stage.json",
        "sweep/sweep.json",
        "sweep/latency.json",
        "sweep/stage.json",
        "sweep/keep-0.8/learned/subnet.toml",
        "sweep/keep-0.8/learned/model/weights.safetensors",
        "sweep/keep-0.8/learned/eval.json",
        "sweep/keep-0.8/uniform/uniform.json",
        "sweep/keep-0.8/uniform/eval.json",
        "sweep/keep-0.6/learned/eval.json",
        "sweep/keep-0.6/uniform/eval.json",
        "report/report.json",
        "report/stage.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // Every figure the report lists decodes, at its size (the overlays: 5 columns of
    // equal tiles, 10 px apart).
    let figures = json(&run.join("report/report.json"))["figures"].clone();
    let figures: Vec<&str> = figures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        figures,
        [
            "gates.png",
            "curves.png",
            "overlays.png",
            "pareto_macs.png",
            "pareto_latency.png"
        ]
    );
    for png in figures {
        let (w, h) = png_size(&run.join("report").join(png));
        match png {
            "gates.png" => assert_eq!((w, h), (1320, 330)),
            "curves.png" => assert_eq!((w, h), (1380, 380)),
            "overlays.png" => assert!(w > 5 * 64 && (w - 10) % 5 == 0 && h > 64, "{w}x{h}"),
            _ => assert_eq!((w, h), (760, 500), "{png}"),
        }
    }
    // Identical files are stored once: the last weights are the last checkpoint's, and
    // after one epoch the best weights (and the fine-tuned model's) are the same bytes.
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |f: &str| std::fs::metadata(run.join(f)).unwrap().ino();
        for stage in ["baseline", "search", "finetuned", "uniform"] {
            let ck = json(&run.join(stage).join("checkpoints/last.json"));
            let model = format!(
                "{stage}/checkpoints/{}/model.safetensors",
                ck["dir"].as_str().unwrap()
            );
            assert_eq!(
                ino(&format!("{stage}/weights.safetensors")),
                ino(&model),
                "{stage}"
            );
            assert_eq!(
                ino(&format!("{stage}/best.safetensors")),
                ino(&model),
                "{stage}"
            );
        }
        assert_eq!(
            ino("finetuned/model/weights.safetensors"),
            ino("finetuned/best.safetensors")
        );
    }
    let eval = json(&run.join("finetuned/eval.json"));
    assert_eq!(
        eval["volumes"].as_array().unwrap().len(),
        2,
        "ED and ES of one test patient"
    );
    assert!(eval["volumes"][0]["hd95_mm"].is_array(), "HD95 is computed");
    let eq = json(&run.join("compressed/equivalence.json"));
    assert!(
        eq["max_abs_diff"].as_f64().unwrap() < 1e-3,
        "sliced == masked: {eq}"
    );

    let md = std::fs::read_to_string(&report_md).unwrap();
    for needle in [
        "## Accuracy on the test set",
        "Dice (%)",
        "HD95 (mm)",
        "HD95 (voxels",
        "FLOPs = 2 x MACs",
        "## The experiment",
        "| TransUNet |",
        "| DFTransUnet (baseline) |",
        "| searched (soft gates) |",
        "| compressed |",
        "| DFTransUnet-slim (fine-tuned) |",
        "| uniform control |",
        "the paper's claim (DFTransUnet-slim vs TransUNet)",
        "learned vs uniform allocation",
        "## Kept widths per transformer block",
        "![gates](gates.png)",
        "![curves](curves.png)",
        "![overlays](overlays.png)",
        "## Budget sweep",
        "![Pareto: Dice against MACs](pareto_macs.png)",
        "![Pareto: Dice against latency](pareto_latency.png)",
    ] {
        assert!(md.contains(needle), "report.md lacks `{needle}`:\n{md}");
    }
    assert!(
        !md.contains("Published ACDC"),
        "published ACDC numbers appear only for real ACDC"
    );
    let rep = json(&run.join("report/report.json"));
    let models = rep["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "transunet",
            "dftransunet",
            "searched",
            "compressed",
            "finetuned",
            "uniform"
        ]
    );
    let model = |name: &str| &models[names.iter().position(|n| *n == name).unwrap()];
    let macs = |name: &str| model(name)["macs"].as_u64().unwrap();
    let params = |name: &str| model(name)["params"].as_u64().unwrap();
    assert!(
        macs("compressed") < macs("dftransunet"),
        "compressed has fewer MACs than the baseline"
    );
    assert_eq!(
        macs("compressed"),
        macs("finetuned"),
        "fine-tuning keeps the architecture"
    );
    assert!(
        macs("uniform") <= macs("compressed") && params("uniform") <= params("compressed"),
        "the uniform control costs no more than the compressed model"
    );
    assert!(
        params("transunet") < params("dftransunet"),
        "TransUNet lacks the pixel module"
    );
    // ... in its trained weights too, and DFTransUnet has it.
    let names = |f: &str| -> Vec<String> {
        tch::Tensor::read_safetensors(run.join(f))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    assert!(
        !names("transunet/best.safetensors")
            .iter()
            .any(|n| n.starts_with("pixel_head."))
    );
    assert!(
        names("baseline/best.safetensors")
            .iter()
            .any(|n| n.starts_with("pixel_head."))
    );
    assert_eq!(
        model("dftransunet")["flops"].as_u64().unwrap(),
        2 * macs("dftransunet")
    );
    for m in models {
        assert!(
            m["latency_ms"]["1"].as_f64().unwrap() > 0.0,
            "own latency at batch 1: {m}"
        );
    }
    let pairs: Vec<(&str, &str)> = rep["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["model"].as_str().unwrap(),
                c["reference"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("dftransunet", "transunet"),
            ("finetuned", "transunet"),
            ("finetuned", "dftransunet"),
            ("finetuned", "uniform")
        ]
    );
    assert!(rep["provenance"]["commit"].is_string());
    // Each model's mean Dice with its bootstrap interval; the others paired to the baseline.
    for m in models {
        let (mean, ci) = (m["dice_mean"].as_f64().unwrap(), &m["dice_ci95"]);
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo <= mean && mean <= hi, "{m}");
    }
    assert!(model("dftransunet")["dice_vs_baseline"].is_null());
    assert!(model("finetuned")["dice_vs_baseline"]["ci95"].is_array());
    assert!(md.contains("95% bootstrap interval"), "{md}");
    assert_eq!(rep["provenance"]["stages"].as_object().unwrap().len(), 8);
    // The training stages ran in fp32 (train.amp off in the tiny preset), and say so.
    assert_eq!(
        rep["provenance"]["training_precision"],
        serde_json::json!({"baseline": "fp32", "search": "fp32", "finetuned": "fp32"})
    );
    assert!(
        md.contains("Trained in: baseline fp32, search fp32, finetuned fp32"),
        "{md}"
    );
    // Precision: the baseline and the fine-tuned model in fp32 (fast paths) and bf16,
    // each against its stage's exact evaluation; the evaluations themselves stay out of
    // report.json's latency.
    let precision = rep["precision"].as_array().unwrap();
    let rows: Vec<(&str, &str)> = precision
        .iter()
        .map(|p| {
            (
                p["stage"].as_str().unwrap(),
                p["precision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("baseline", "fp32"),
            ("finetuned", "fp32"),
            ("baseline", "bf16"),
            ("finetuned", "bf16")
        ]
    );
    for p in precision {
        let change = p["change_vs_exact_fp32"]["mean"].as_f64().unwrap();
        assert!(change.abs() < 0.01, "{p}");
        assert!(p["latency_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert!(rep["latency"]["accuracy"].as_array().unwrap().is_empty());
    assert!(md.contains("### Precision"), "{md}");
    // The sweep: per budget, the learned subnet and its uniform control.
    let sweep = rep["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 2);
    let full_macs = macs("dftransunet") as f64;
    for (b, keep) in sweep.iter().zip([0.8, 0.6]) {
        assert_eq!(b["keep"], keep);
        for m in [&b["learned"], &b["uniform"]] {
            let (mean, ci) = (m["dice_mean"].as_f64().unwrap(), &m["dice_ci95"]);
            assert!(ci[0].as_f64().unwrap() <= mean && mean <= ci[1].as_f64().unwrap());
            assert!(m["params"].as_u64().unwrap() > 0);
            assert!(m["latency_ms"]["1"].as_f64().unwrap() > 0.0, "{m}");
            assert!(
                m["macs"].as_u64().unwrap() as f64 <= keep * full_macs,
                "{b}"
            );
        }
        assert!(b["uniform"]["macs"].as_u64() <= b["learned"]["macs"].as_u64());
    }
    assert!(sweep[1]["learned"]["macs"].as_u64() < sweep[0]["learned"]["macs"].as_u64());
    assert!(model("dftransunet")["accuracy"]["dice"].is_array());

    // Second reproduce: nothing is retrained.
    let best = run.join("baseline/best.safetensors");
    let before = std::fs::metadata(&best).unwrap().modified().unwrap();
    let o = ok(&argv);
    let t = text(&o);
    for stage in [
        "baseline",
        "transunet",
        "search",
        "compressed",
        "finetuned",
        "uniform",
        "bench",
        "sweep",
        "report",
    ] {
        assert!(
            t.contains(&format!("[{stage}] done")) && t.contains("skipped"),
            "second reproduce should skip {stage}:\n{t}"
        );
    }
    assert!(!t.contains("training into"), "{t}");
    assert_eq!(
        std::fs::metadata(&best).unwrap().modified().unwrap(),
        before
    );

    // Interrupted after fine-tuning's last checkpoint but before the stage was recorded:
    // reproduce continues that stage from its checkpoint and skips the others.
    std::fs::remove_file(run.join("finetuned/stage.json")).unwrap();
    let o = ok(&argv);
    let t = text(&o);
    assert!(t.contains("[search] done"), "{t}");
    assert!(
        t.contains("[finetune]"),
        "fine-tuning should run again:\n{t}"
    );
    let m = json(&run.join("finetuned/metrics.json"));
    assert_eq!(
        m["resumed_from_epoch"], 1,
        "resumed from the checkpoint: {m}"
    );
    assert!(run.join("finetuned/stage.json").is_file());

    // A stage command refuses to redo a finished stage without --force.
    fails(&["train", "--run", r], &["baseline", "--force"]);

    // predict: labels with the input's header and affine.
    let input = run.join("data/testing/patient101/patient101_frame01.nii.gz");
    let out = dir.join("pred.nii.gz");
    ok(&[
        "predict",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--run",
        r,
    ]);
    let info_in = json_stdout(&["volume-info", "--json", input.to_str().unwrap()]);
    let info_out = json_stdout(&["volume-info", "--json", out.to_str().unwrap()]);
    assert_eq!(info_in["affine"], info_out["affine"]);
    assert_eq!(info_in["shape"], info_out["shape"]);
    assert_eq!(info_in["spacing"], info_out["spacing"]);
    assert_eq!(info_out["datatype"], "uint8");
    // The written labels score what the report says for this volume (same resize).
    let pred = slimseg_data::nii::read_labels(&out).unwrap();
    let gt = slimseg_data::nii::read_labels(
        &run.join("data/testing/patient101/patient101_frame01_gt.nii.gz"),
    )
    .unwrap();
    let scores = json(&run.join("finetuned/eval.json"));
    let reported = scores["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["patient"] == 101 && v["phase"] == "ED")
        .expect("patient 101 ED is scored");
    for k in 1..=3u8 {
        let p = pred.data.mapv(|x| x == k);
        let g = gt.data.mapv(|x| x == k);
        // TransUNet's convention: an empty prediction scores 0, an empty truth 1.
        let d = if !p.iter().any(|&v| v) {
            0.0
        } else if !g.iter().any(|&v| v) {
            1.0
        } else {
            slimseg_data::metrics::dice(p.view(), g.view()).unwrap()
        };
        let want = reported["dice"][usize::from(k - 1)].as_f64().unwrap();
        assert!(
            (d - want).abs() < 1e-9,
            "class {k}: file {d}, eval.json {want}"
        );
    }

    // info: per-block kept widths of the compressed model.
    let info = json_stdout(&["info", "--run", r, "--stage", "compressed", "--json"]);
    assert_eq!(info["blocks"].as_array().unwrap().len(), 4);
    assert_eq!(
        info["flops"].as_u64().unwrap(),
        2 * info["macs"].as_u64().unwrap()
    );
    assert_eq!(info["macs"].as_u64().unwrap(), macs("compressed"));

    // bench with other options: a side measurement of every model.
    let bench_json = dir.join("bench.json");
    ok(&[
        "bench",
        "--run",
        r,
        "--device",
        "cpu",
        "--batch",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--json",
        bench_json.to_str().unwrap(),
    ]);
    let b = json(&bench_json);
    assert_eq!(b["batches"][0], 2);
    assert_eq!(b["fast_paths"], true);
    // Every model in fp32 and bf16 ([bench] precisions), the searched one (gates) in
    // fp32 only.
    let timed: Vec<(String, String)> = b["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(m["stats"][0]["median_ms"].as_f64().unwrap() > 0.0, "{m}");
            (
                m["stage"].as_str().unwrap().to_string(),
                m["precision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(timed.len(), 11, "{timed:?}");
    assert!(
        !timed.contains(&("search".into(), "bf16".into())),
        "{timed:?}"
    );
    assert!(
        timed.contains(&("finetuned".into(), "bf16".into())),
        "{timed:?}"
    );

    // eval: a side evaluation; the stage's own evaluation stays.
    let own = std::fs::read(run.join("compressed/eval.json")).unwrap();
    ok(&["eval", "--run", r, "--stage", "compressed", "--exact"]);
    let side = json(&run.join("evals/test/compressed.json"));
    assert_eq!(side["run_test_set"], true);
    assert_eq!(
        side["inference"],
        serde_json::json!({"precision": "fp32", "fast_paths": false})
    );
    assert_eq!(
        side["report"]["volumes"],
        json(&run.join("compressed/eval.json"))["volumes"]
    );
    assert_eq!(
        std::fs::read(run.join("compressed/eval.json")).unwrap(),
        own
    );
    // In bf16 with the fast paths, under its own name: recorded as such, close.
    ok(&[
        "eval",
        "--run",
        r,
        "--stage",
        "compressed",
        "--precision",
        "bf16",
        "--name",
        "test-bf16",
    ]);
    let half = json(&run.join("evals/test-bf16/compressed.json"));
    assert_eq!(half["inference"]["precision"], "bf16");
    let dice = |v: &serde_json::Value| v["report"]["mean_dice"].as_f64().unwrap();
    assert!(
        (dice(&half) - dice(&side)).abs() < 0.01,
        "{} vs {}",
        dice(&half),
        dice(&side)
    );

    // Unreachable budget: an error, and the finished compressed stage stays intact.
    fails(
        &[
            "compress",
            "--run",
            r,
            "--force",
            "--target-macs",
            "1%",
            "--scope",
            "model",
        ],
        &["unreachable budget", "gates_end.json"],
    );
    assert!(run.join("compressed/stage.json").is_file());
    assert!(run.join("compressed/model.toml").is_file());

    // Missing input volume.
    fails(
        &[
            "predict",
            "/nonexistent/x.nii.gz",
            "-o",
            out.to_str().unwrap(),
            "--run",
            r,
        ],
        &["/nonexistent/x.nii.gz"],
    );

    // The model errors below come with an output path that does not exist yet.
    let out = dir.join("unwritten.nii.gz");

    // Corrupt weights: a new run dir with the same config and a garbage baseline.
    let bad = dir.join("corrupt");
    std::fs::create_dir_all(bad.join("baseline")).unwrap();
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        cfg.contains("root = \"data\""),
        "the data root is relative: {cfg}"
    );
    let cfg = cfg.replace(
        "root = \"data\"",
        &format!("root = {:?}", run.join("data").to_str().unwrap()),
    );
    std::fs::write(bad.join("config.toml"), &cfg).unwrap();
    std::fs::write(
        bad.join("baseline/best.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    fails(
        &[
            "predict",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--run",
            bad.to_str().unwrap(),
            "--stage",
            "baseline",
        ],
        &["best.safetensors"],
    );

    // Mismatched checkpoint: the baseline of this run under a model with other widths.
    let other = dir.join("mismatch");
    std::fs::create_dir_all(other.join("baseline")).unwrap();
    assert!(cfg.contains("mlp_dim = 768"), "{cfg}");
    std::fs::write(
        other.join("config.toml"),
        cfg.replace("mlp_dim = 768", "mlp_dim = 96"),
    )
    .unwrap();
    std::fs::copy(&best, other.join("baseline/best.safetensors")).unwrap();
    fails(
        &[
            "predict",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--run",
            other.to_str().unwrap(),
            "--stage",
            "baseline",
        ],
        &["best.safetensors", "fc1"],
    );

    // A stage without its predecessor names the missing file.
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("config.toml"), &cfg).unwrap();
    fails(
        &["search", "--run", fresh.to_str().unwrap()],
        &["baseline stage is missing", "slimseg train --run"],
    );

    // More budgets: the sweep is rebuilt beside the finished one, whose budgets are linked
    // over, not made again.
    use std::os::unix::fs::MetadataExt;
    let ino = |f: &str| std::fs::metadata(run.join(f)).unwrap().ino();
    let kept = ino("sweep/keep-0.8/learned/eval.json");
    let t = text(&ok(&["sweep", "--run", r, "--keep", "0.8,0.6,0.5"]));
    assert!(t.contains("keep 0.8: finished before, kept"), "{t}");
    assert!(t.contains("keep 0.6: finished before, kept"), "{t}");
    assert!(!t.contains("[sweep 0.8 learned]"), "{t}");
    assert_eq!(ino("sweep/keep-0.8/learned/eval.json"), kept);
    let rec = json(&run.join("sweep/sweep.json"));
    assert_eq!(rec["budgets"].as_array().unwrap().len(), 3);
    assert!(run.join("sweep/keep-0.5/uniform/eval.json").is_file());

    // An interrupted sweep resumes in the budget it was in, from its checkpoint, also
    // when it is called again with another list (the sweep restarts, its budgets stay).
    std::fs::remove_dir_all(run.join("sweep")).unwrap();
    let t = text(&ok(&[
        "sweep",
        "--run",
        r,
        "--keep",
        "0.7",
        "--epochs",
        "2",
        "--stop-after",
        "1",
    ]));
    assert!(t.contains("stopped after 1 epoch"), "{t}");
    assert!(!run.join("sweep/stage.json").exists());
    let t = text(&ok(&[
        "sweep", "--run", r, "--keep", "0.7,0.5", "--epochs", "2",
    ]));
    assert!(t.contains("keep-0.7 (it has its own record)"), "{t}");
    let m = json(&run.join("sweep/keep-0.7/learned/metrics.json"));
    assert_eq!(m["resumed_from_epoch"], 1, "{m}");
    assert!(run.join("sweep/stage.json").is_file());
    // --force makes every budget again.
    let t = text(&ok(&["sweep", "--run", r, "--force"]));
    assert!(
        t.contains("[sweep 0.7 learned]") && t.contains("[sweep 0.5 uniform]"),
        "{t}"
    );
    // A budget that is not a fraction is refused before anything runs.
    fails(
        &["sweep", "--run", r, "--keep", "1.5"],
        &["sweep.keep", "1.5"],
    );

    // A latency budget: compress measures the latency table first (the profile stage),
    // selects by it, and the report sets each model's predicted latency beside the bench
    // stage's measurement.
    let t = text(&ok(&["compress", "--run", r, "--target-latency", "0.9"]));
    assert!(t.contains("[profile] block latency"), "{t}");
    let table = json(&run.join("profile/latency_table.json"));
    assert_eq!(table["block_ms"].as_array().unwrap().len(), 125);
    let budget = &json(&run.join("compressed/compress.json"))["budget"];
    assert_eq!(budget["metric"], "latency", "{budget}");
    assert_eq!(budget["keep"], 0.9, "{budget}");
    let mut lat = tiny_reproduce_args(r);
    lat.extend([
        "--set".to_string(),
        "select.budget={kind=\"model\", latency=0.9}".to_string(),
    ]);
    let t = text(&ok(&common::strs(&lat)));
    assert!(t.contains("compressed   skipped (up to date)"), "{t}");
    let rep = json(&run.join("report/report.json"));
    let pred = rep["latency_prediction"].as_array().unwrap();
    let predicted = |stage: &str| {
        pred.iter().find(|p| p["stage"] == stage).unwrap()["predicted_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(
        predicted("compressed") <= 0.9 * predicted("baseline") + 1e-9,
        "{pred:?}"
    );
    assert!(
        pred.iter()
            .all(|p| p["measured_ms"].as_f64().unwrap() > 0.0),
        "{pred:?}"
    );
    // The fractions of the full model's latency, predicted over measured.
    let field = |stage: &str, key: &str| {
        pred.iter().find(|p| p["stage"] == stage).unwrap()[key]
            .as_f64()
            .unwrap()
    };
    let fraction = |stage: &str, key: &str| field(stage, key) / field("baseline", key);
    let want = fraction("compressed", "predicted_ms") / fraction("compressed", "measured_ms");
    let got = field("compressed", "relative_predicted_over_measured");
    assert!((got - want).abs() < 1e-9, "{pred:?}");
    let md = std::fs::read_to_string(&report_md).unwrap();
    assert!(md.contains("### Latency predicted by the profile"), "{md}");
    // `profile --batch --threads` sets the run's `[profile] batch` and threads: the table
    // is measured again at that batch, on that many threads.
    let t = text(&ok(&[
        "profile",
        "--run",
        r,
        "--batch",
        "2",
        "--threads",
        "1",
    ]));
    assert!(t.contains("batch 2"), "{t}");
    let table = json(&run.join("profile/latency_table.json"));
    assert_eq!(table["batch"], 2, "{table}");
    assert_eq!(table["device"], "cpu (1 threads)", "{table}");

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_typos_are_errors_naming_the_key() {
    let dir = scratch("typo");
    let bad = dir.join("bad.toml");
    let cfg = std::fs::read_to_string(tiny_config()).unwrap();
    let typo = cfg.replacen("epochs = ", "epochz = ", 1);
    assert_ne!(typo, cfg, "tiny.toml has a train.epochs line to misspell");
    std::fs::write(&bad, typo).unwrap();
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    fails(
        &["train", "--config", bad.to_str().unwrap(), "--run", r],
        &["epochz", "bad.toml"],
    );
    fails(
        &[
            "train",
            "--config",
            tiny_config().to_str().unwrap(),
            "--run",
            r,
            "--set",
            "train.learning_rate=0.1",
        ],
        &["learning_rate", "tiny.toml"],
    );
    fails(
        &[
            "train",
            "--config",
            tiny_config().to_str().unwrap(),
            "--run",
            r,
            "--set",
            "train.lr=-1",
        ],
        &["train.lr"],
    );
    fails(
        &["train", "--config", "/nonexistent/c.toml", "--run", r],
        &["/nonexistent/c.toml"],
    );
    // Nothing was trained or generated for any of them.
    assert!(!run.join("baseline").exists());
    assert!(!run.join("data").exists());
    // A device that is no device, and a GPU that is not there (no machine here has 99).
    fails(
        &["train", "--run", r, "--device", "gpu"],
        &["gpu", "cuda:N"],
    );
    let args = common::tiny_train_args(&run, 1);
    let mut args = common::strs(&args);
    let at = args.iter().position(|a| *a == "cpu").unwrap();
    args[at] = "cuda:99";
    fails(&args, &["`cuda:99` requested"]);
    assert!(!run.join("baseline").exists(), "no stage folder for it");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_pretrained_weights_are_rejected_with_their_path() {
    let dir = scratch("pretrained");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let config = tiny_config();
    let base = [
        "train",
        "--config",
        config.to_str().unwrap(),
        "--run",
        r,
        "--synth-train",
        "1",
        "--synth-val",
        "1",
        "--synth-test",
        "1",
        "--device",
        "cpu",
    ];
    let missing = dir.join("missing.npz");
    let mut args = base.to_vec();
    args.extend(["--pretrained", missing.to_str().unwrap()]);
    fails(&args, &[missing.to_str().unwrap(), "no such file"]);

    // A file that is not an npz: the import runs before training and names the file.
    let corrupt = dir.join("R50+ViT-B_16.npz");
    std::fs::write(&corrupt, b"<html>not a zip</html>").unwrap();
    let mut args = base.to_vec();
    args.extend(["--pretrained", corrupt.to_str().unwrap()]);
    fails(&args, &[corrupt.to_str().unwrap()]);
    assert!(!run.join("baseline/stage.json").exists());
    assert!(!run.join("baseline/best.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_dataset_is_rejected_with_its_path() {
    let dir = scratch("empty");
    let data = dir.join("acdc");
    std::fs::create_dir_all(data.join("training")).unwrap();
    std::fs::create_dir_all(data.join("testing")).unwrap();
    let run = dir.join("run");
    fails(
        &[
            "train",
            "--config",
            tiny_config().to_str().unwrap(),
            "--run",
            run.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
        &[data.to_str().unwrap()],
    );
    assert!(!run.join("baseline/stage.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn structured_bench_needs_only_a_config() {
    let dir = scratch("bench");
    let out = dir.join("bench.json");
    let run = dir.join("run");
    let cfg = tiny_config();
    let base = [
        "bench",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--batch",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--json",
        out.to_str().unwrap(),
        "--structured-mac-reduction",
    ];
    let mut args = base.to_vec();
    args.push("0.3");
    ok(&args);
    let b = json(&out);
    let s = &b["summary"];
    let red = 1.0 - s["macs"].as_f64().unwrap() / s["full_macs"].as_f64().unwrap();
    assert!(red >= 0.3, "MAC reduction {red}");
    assert!(b["rows"][0]["full"]["median_ms"].as_f64().unwrap() > 0.0);
    // tiny's transformer blocks are 60% of its MACs: a 70% cut is out of reach.
    let mut args = base.to_vec();
    args.push("0.7");
    fails(&args, &["out of reach"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
