//! End-to-end tests of bad and hostile inputs through the `slimseg` binary: no command
//! overwrites data it did not make, memory is bounded by a voxel limit checked before
//! allocating, non-finite voxels are errors, volumes are cut along their through-plane
//! axis whatever their axis order, `data check` reports every broken patient, and
//! `volume-info` reads the whole payload.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fails, json_stdout, ok, scratch, text, tiny_config};
use slimseg_data::nii::{self, GzLevel, NiftiHeader, NiftiType};
use slimseg_data::orient::SliceOrientation;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A run with a baseline trained for six epochs on two synthetic patients (a few
/// seconds; after one epoch it labels every pixel alike, which no orientation test can
/// tell apart), under `data.orientation` = `orientation`.
fn train_run(orientation: &str) -> PathBuf {
    let run = scratch(&format!("inputs-run-{orientation}")).join("run");
    let mut args = common::tiny_train_args(&run, 6);
    args.extend(["--set".into(), format!("data.orientation={orientation}")]);
    ok(&common::strs(&args));
    run
}

/// The run of [`train_run`] with the default orientation, shared by the tests.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| train_run("stored"))
}

/// The ED image of the trained run's test patient.
fn test_image() -> PathBuf {
    trained_run().join("data/testing/patient101/patient101_frame01.nii.gz")
}

fn predict(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    predict_with(trained_run(), input, out, extra)
}

fn predict_with(run: &Path, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "predict",
        s(input),
        "-o",
        s(out),
        "--run",
        s(run),
        "--stage",
        "baseline",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    common::slimseg(&args)
}

/// A synthetic ACDC tree written by the binary.
fn synth_tree(dir: &Path, training: usize, testing: usize) -> PathBuf {
    let root = dir.join("acdc");
    ok(&[
        "data",
        "synth",
        "--out",
        s(&root),
        "--training",
        &training.to_string(),
        "--testing",
        &testing.to_string(),
        "--no-4d",
    ]);
    root
}

/// Rewrites an image as float32 with `value` at one voxel.
fn poison(path: &Path, value: f32) {
    let v = nii::read_volume(path).unwrap();
    let mut data = v.data.clone();
    let (z, y, x) = data.dim();
    data[[z / 2, y / 2, x / 2]] = value;
    nii::write_volume(path, data.view(), &v.header, GzLevel::Fast).unwrap();
}

#[test]
fn synth_refuses_a_folder_that_is_not_empty() {
    let dir = scratch("synth-nonempty");
    let info = dir.join("acdc/training/patient001/Info.cfg");
    std::fs::create_dir_all(info.parent().unwrap()).unwrap();
    let precious = "ED: 1\nES: 12\nGroup: NOR\nHeight: 170\nNbFrame: 30\nWeight: 70\n";
    std::fs::write(&info, precious).unwrap();
    fails(
        &[
            "data",
            "synth",
            "--out",
            s(&dir.join("acdc")),
            "--training",
            "2",
            "--testing",
            "0",
            "--no-4d",
        ],
        &["refusing to write", "not empty", "acdc"],
    );
    assert_eq!(std::fs::read_to_string(&info).unwrap(), precious);
    assert_eq!(
        std::fs::read_dir(dir.join("acdc/training"))
            .unwrap()
            .count(),
        1
    );
    // A new folder (and an empty one) are fine, and no staging folder is left behind.
    synth_tree(&dir.join("new"), 1, 0);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    synth_tree(&dir.join("empty"), 1, 0);
    for d in ["new", "empty"] {
        let names: Vec<String> = std::fs::read_dir(dir.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["acdc"], "{d}: {names:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_never_replaces_its_input_or_an_existing_file() {
    let dir = scratch("predict-out");
    let input = dir.join("in.nii.gz");
    std::fs::copy(test_image(), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let same_via_dots = dir.join("sub/../in.nii.gz");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let link = dir.join("link.nii.gz");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    // `..` after a folder that does not exist yet resolves by name.
    let via_missing = dir.join("missing/../in.nii.gz");
    for out in [&input, &same_via_dots, &link, &via_missing] {
        let o = predict(&input, out, &["--overwrite"]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("is the input"), "{}", text(&o));
    }
    let o = predict(&link, &input, &["--overwrite"]);
    assert!(!o.status.success() && text(&o).contains("is the input"));
    assert_eq!(std::fs::read(&input).unwrap(), original, "input untouched");

    // A new output is written; an existing one only with --overwrite.
    let out = dir.join("pred.nii.gz");
    let o = predict(&input, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&out, b"user data").unwrap();
    let o = predict(&input, &out, &[]);
    assert!(!o.status.success() && text(&o).contains("--overwrite"));
    assert_eq!(std::fs::read(&out).unwrap(), b"user data");
    let o = predict(&input, &out, &["--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(nii::read_labels(&out).unwrap().header.datatype, 2);

    // Never a file of the run, even with --overwrite.
    let weights = trained_run().join("baseline/best.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let o = predict(&input, &weights, &["--overwrite"]);
    assert!(!o.status.success() && text(&o).contains("run directory"));
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    let config = trained_run().join("missing/../config.toml");
    let o = predict(&input, &config, &["--overwrite"]);
    assert!(
        !o.status.success() && text(&o).contains("run directory"),
        "{}",
        text(&o)
    );
    assert!(
        !trained_run().join("missing").exists(),
        "nothing is created before the checks"
    );
    // Nor a file reached through a folder of the run that links elsewhere.
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious.nii.gz"), b"ground truth").unwrap();
    let linked = trained_run().join("linked-data");
    let _ = std::fs::remove_file(&linked);
    std::os::unix::fs::symlink(&outside, &linked).unwrap();
    let o = predict(&input, &linked.join("precious.nii.gz"), &["--overwrite"]);
    assert!(
        !o.status.success() && text(&o).contains("run directory"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(outside.join("precious.nii.gz")).unwrap(),
        b"ground truth"
    );
    std::fs::remove_file(&linked).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn volumes_above_the_voxel_limit_are_refused_before_allocating() {
    let dir = scratch("huge");
    // A header promising 1024^3 uint8 voxels (1 GiB) with no payload: refused from the
    // header alone, before any allocation or read of the voxels.
    let h = NiftiHeader::new_3d([1024, 1024, 1024], [1.0, 1.0, 1.0], NiftiType::U8);
    let mut raw = h.to_bytes().to_vec();
    raw.extend_from_slice(&[0; 4 + 4096]);
    let huge = dir.join("huge.nii");
    std::fs::write(&huge, &raw).unwrap();
    let o = predict(&huge, &dir.join("out.nii.gz"), &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("huge.nii") && t.contains("1073741824 voxels") && t.contains("limit"),
        "{t}"
    );
    assert!(!dir.join("out.nii.gz").exists());

    // data check reports it as the patient's problem.
    let root = synth_tree(&dir, 1, 0);
    let ed = slimseg_data::PatientInfo::read(&root.join("training/patient001/Info.cfg"))
        .unwrap()
        .ed;
    let img = root.join(format!(
        "training/patient001/patient001_frame{ed:02}.nii.gz"
    ));
    std::fs::remove_file(&img).unwrap();
    std::fs::write(img.with_extension(""), &raw).unwrap();
    let t = fails(&["data", "check", s(&root)], &["patient001", "limit"]);
    assert!(t.contains("1073741824 voxels"), "{t}");

    // The limit is configurable: a normal volume is refused under a small one.
    let o = predict(
        &test_image(),
        &dir.join("small.nii.gz"),
        &["--max-voxels", "1000"],
    );
    assert!(!o.status.success() && text(&o).contains("limit of 1000"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_voxels_are_errors_in_predict_train_eval_and_check() {
    let dir = scratch("nonfinite");
    for (name, value, count_note) in [("inf", f32::INFINITY, "1 of"), ("nan", f32::NAN, "1 of")] {
        let input = dir.join(format!("{name}.nii.gz"));
        std::fs::copy(test_image(), &input).unwrap();
        poison(&input, value);
        let out = dir.join(format!("{name}-pred.nii.gz"));
        let o = predict(&input, &out, &[]);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(
            t.contains(&format!("{name}.nii.gz"))
                && t.contains(count_note)
                && t.contains("not finite"),
            "{t}"
        );
        assert!(!out.exists());
        // Replaced on request, and said so.
        let o = predict(&input, &out, &["--replace-non-finite"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("replaced 1 non-finite voxels"),
            "{}",
            text(&o)
        );
        let counts = nii::read_labels(&out)
            .unwrap()
            .data
            .iter()
            .filter(|&&l| l > 0)
            .count();
        assert!(counts > 0, "the replaced volume is not blanked");
    }

    // A training image with one +Inf voxel: data check and train both refuse it.
    let root = synth_tree(&dir, 4, 0);
    let ed = slimseg_data::PatientInfo::read(&root.join("training/patient002/Info.cfg"))
        .unwrap()
        .ed;
    let name = format!("patient002_frame{ed:02}.nii.gz");
    poison(&root.join("training/patient002").join(&name), f32::INFINITY);
    fails(&["data", "check", s(&root)], &[&name, "not finite"]);
    let run = dir.join("run");
    fails(
        &[
            "train",
            "--config",
            s(&tiny_config()),
            "--run",
            s(&run),
            "--data",
            s(&root),
            "--set",
            "data.split={kind=\"explicit\",train=[1,2],val=[3],test=[4]}",
            "--set",
            "train.epochs=1",
            "--device",
            "cpu",
        ],
        &[&name, "not finite"],
    );
    assert!(!run.join("baseline/stage.json").exists());

    // eval of a trained run whose test image holds a NaN.
    let copy = dir.join("run-copy");
    let o = std::process::Command::new("cp")
        .args(["-a", s(trained_run()), s(&copy)])
        .output()
        .unwrap();
    assert!(o.status.success());
    let test = copy.join("data/testing/patient101/patient101_frame01.nii.gz");
    poison(&test, f32::NAN);
    fails(
        &[
            "eval",
            "--run",
            s(&copy),
            "--data",
            s(&copy.join("data")),
            "--stage",
            "baseline",
            "--device",
            "cpu",
        ],
        &["patient101_frame01.nii.gz", "not finite"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Predicts `transforms` of the run's test image (each a copy whose file axes are the
/// original's permuted by `perm`, the `flip` ones reversed, with an affine that keeps
/// every voxel's world position) and returns, per copy, how many voxels differ from the
/// original's labels once the copy's labels are mapped back.
fn labels_of_copies(run: &Path, name: &str, transforms: &[([usize; 3], [bool; 3])]) -> Vec<usize> {
    let dir = scratch(name);
    let input = test_image();
    let reference = dir.join("reference.nii.gz");
    let o = predict_with(run, &input, &reference, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let want = nii::read_labels(&reference).unwrap().data;
    let mut present = [false; 4];
    want.iter().for_each(|&l| present[usize::from(l)] = true);
    assert!(
        present.iter().filter(|&&p| p).count() >= 2,
        "the reference labels must vary, or a wrong plane would go unnoticed"
    );
    let vol = nii::read_volume(&input).unwrap();
    let mut differ = Vec::new();
    for (i, &(perm, flip)) in transforms.iter().enumerate() {
        let t = SliceOrientation { perm, flip };
        let copy = dir.join(format!("copy{i}.nii.gz"));
        let moved = vol.clone().reoriented(&t);
        let data = moved.data.mapv(|v| v as i16);
        nii::write_volume(&copy, data.view(), &moved.header, GzLevel::Fast).unwrap();
        let out = dir.join(format!("copy{i}-pred.nii.gz"));
        let o = predict_with(run, &copy, &out, &[]);
        assert!(o.status.success(), "{}", text(&o));
        let got = nii::read_labels(&out).unwrap();
        assert_eq!(got.data.dim(), data.dim(), "labels on the copy's grid");
        assert_eq!(
            nii::geometry_difference(&got.header, &nii::read_header(&copy).unwrap()),
            None
        );
        let back = t.from_canonical(got.data.view());
        differ.push(back.iter().zip(&want).filter(|(a, b)| a != b).count());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    differ
}

#[test]
fn copies_with_the_slice_axis_moved_or_reversed_get_the_same_labels() {
    let transforms = [
        ([2, 0, 1], [false, false, false]), // the 10 mm axis first
        ([0, 2, 1], [false, false, false]),
        ([2, 0, 1], [true, false, false]), // and its slices reversed
        ([0, 1, 2], [false, false, true]), // slices reversed
    ];
    let differ = labels_of_copies(trained_run(), "orient-stored", &transforms);
    assert_eq!(differ, [0; 4], "voxels that differ per copy");
}

#[test]
fn under_world_orientation_every_permuted_or_flipped_copy_gets_the_same_labels() {
    let run = train_run("world");
    let transforms = [
        ([2, 0, 1], [false, false, false]),
        ([1, 2, 0], [true, false, false]),
        ([1, 0, 2], [false, false, false]), // in-plane transpose
        ([0, 1, 2], [true, false, false]),  // one in-plane flip
        ([0, 1, 2], [false, false, true]),  // slices reversed
        ([2, 1, 0], [true, true, true]),
    ];
    let differ = labels_of_copies(&run, "orient-world", &transforms);
    assert_eq!(differ, [0; 6], "voxels that differ per copy");
    std::fs::remove_dir_all(run.parent().unwrap()).unwrap();
}

#[test]
fn data_check_reports_every_broken_patient_and_goes_on() {
    let dir = scratch("check");
    let root = synth_tree(&dir, 7, 0);
    let p = |n: u32| root.join(format!("training/patient{n:03}"));
    let info = |n: u32| slimseg_data::PatientInfo::read(&p(n).join("Info.cfg")).unwrap();
    let frame = |n: u32, f: u32, gt: bool| {
        p(n).join(format!(
            "patient{n:03}_frame{f:02}{}.nii.gz",
            if gt { "_gt" } else { "" }
        ))
    };
    // 1: no Info.cfg. 2: no ground truth for ED. 3: ED == ES. 4: ground truth shifted
    // 5 mm. 5: a NaN voxel. 6: labels turned 90 degrees in the world. 7: intact.
    std::fs::remove_file(p(1).join("Info.cfg")).unwrap();
    std::fs::remove_file(frame(2, info(2).ed, true)).unwrap();
    let mut i3 = info(3);
    i3.es = i3.ed;
    std::fs::write(p(3).join("Info.cfg"), i3.to_cfg_string()).unwrap();
    let shift = |n: u32, f: &dyn Fn(&mut NiftiHeader)| {
        let path = frame(n, info(n).ed, true);
        let v = nii::read_labels(&path).unwrap();
        let mut h = v.header.clone();
        f(&mut h);
        nii::write_volume(&path, v.data.view(), &h, GzLevel::Fast).unwrap();
    };
    shift(4, &|h| h.qoffset[0] += 5.0);
    shift(6, &|h| {
        let mut a = h.qform_affine().unwrap();
        for row in a.iter_mut().take(3) {
            row.swap(0, 1);
            row[0] = -row[0];
        }
        h.set_qform(&a);
    });
    poison(&frame(5, info(5).es, false), f32::NAN);
    std::fs::create_dir_all(root.join("training/notes")).unwrap();
    std::fs::create_dir_all(root.join("testing")).unwrap();

    let o = common::slimseg(&["data", "check", s(&root)]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    let problems: Vec<&str> = t.lines().filter(|l| l.starts_with("problem: ")).collect();
    let expect = [
        ("patient001", "Info.cfg"),
        ("patient002", "ground truth"),
        ("patient003", "ED and ES are both frame"),
        ("patient004", "origin"),
        ("patient005", "not finite"),
        ("patient006", "direction"),
        ("notes", "not a patient folder"),
        ("testing", "no patient folder"),
    ];
    for (who, what) in expect {
        let lines: Vec<&&str> = problems.iter().filter(|l| l.contains(who)).collect();
        assert_eq!(lines.len(), 1, "{who} should be one problem:\n{t}");
        assert!(lines[0].contains(what), "{who}: {what}:\n{t}");
    }
    assert!(
        !t.contains("patient007"),
        "an intact patient is not a problem:\n{t}"
    );
    assert_eq!(problems.len(), expect.len(), "{t}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn volume_info_reads_the_whole_payload() {
    let dir = scratch("volinfo");
    let good = dir.join("good.nii.gz");
    std::fs::copy(test_image(), &good).unwrap();
    let info = json_stdout(&["volume-info", "--json", s(&good)]);
    assert_eq!(info["non_finite"], 0);
    assert!(info["voxels"].as_u64().unwrap() > 0);
    let bytes = std::fs::read(&good).unwrap();

    let cut = dir.join("cut.nii.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    fails(&["volume-info", s(&cut)], &["cut.nii.gz"]);

    // The gzip trailer holds the CRC-32 of the payload, then its length.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 8] ^= 0xff;
    let crc = dir.join("crc.nii.gz");
    std::fs::write(&crc, &bad).unwrap();
    fails(&["volume-info", s(&crc)], &["crc.nii.gz", "corrupt"]);

    // A quaternion that is not a rotation (b^2 + c^2 + d^2 > 1), as nibabel refuses.
    let mut h = nii::read_header(&good).unwrap();
    h.quatern = [0.8, 0.6, 0.3];
    let v = nii::read_volume(&good).unwrap();
    let quat = dir.join("quat.nii.gz");
    nii::write_volume(&quat, v.data.mapv(|x| x as i16).view(), &h, GzLevel::Fast).unwrap();
    fails(&["volume-info", s(&quat)], &["quat.nii.gz", "quaternion"]);
    let o = predict(&quat, &dir.join("q.nii.gz"), &[]);
    assert!(!o.status.success() && text(&o).contains("quaternion"));
    std::fs::remove_dir_all(&dir).unwrap();
}
