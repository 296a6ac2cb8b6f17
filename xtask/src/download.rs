//! `cargo xtask download`: the ACDC dataset and the ImageNet-21k R50+ViT-B/16 weights.
//!
//! Downloads go through `curl` into `NAME.part` files that a later run resumes (`-C -`),
//! and are renamed into place only when complete. The ACDC zip is unpacked into a
//! temporary folder, checked by structure (100 training and 50 testing patients, each with
//! an Info.cfg) and then moved into place, so an interrupted run never leaves a tree that
//! looks finished.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ACDC collection on the challenge's data server (CC BY-NC-SA 4.0).
const ACDC_URL: &str = "https://humanheart-project.creatis.insa-lyon.fr/database/api/v1/collection/637218c173e9f0047faa00fb/download";
/// The challenge page, for manual download and the registration terms.
const ACDC_PAGE: &str = "https://www.creatis.insa-lyon.fr/Challenge/acdc/";
/// The ImageNet-21k R50+ViT-B/16 weights TransUNet starts from.
const VIT_URL: &str = "https://storage.googleapis.com/vit_models/imagenet21k/R50+ViT-B_16.npz";
/// Patients in the complete ACDC release.
const ACDC_TRAINING: usize = 100;
const ACDC_TESTING: usize = 50;

/// What to download and where.
#[derive(Debug)]
pub struct Options {
    /// Root folder: ACDC goes to `DIR/acdc`, weights to `DIR/pretrained`.
    dir: PathBuf,
    acdc: bool,
    weights: bool,
}

impl Options {
    /// Parses `download [--acdc] [--weights] [--dir DIR]`; neither flag means both.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Options {
            dir: crate::workspace_root().join("data"),
            acdc: false,
            weights: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--acdc" => options.acdc = true,
                "--weights" => options.weights = true,
                "--dir" => {
                    options.dir = PathBuf::from(args.next().context("--dir needs a folder")?)
                }
                other => bail!("unknown option `{other}` for `cargo xtask download`"),
            }
        }
        if !options.acdc && !options.weights {
            options.acdc = true;
            options.weights = true;
        }
        Ok(options)
    }
}

/// Where `download` puts the ACDC tree under `dir`.
pub fn acdc_dir(dir: &Path) -> PathBuf {
    dir.join("acdc")
}

/// Where `download` puts the ViT weights under `dir`.
pub fn vit_weights(dir: &Path) -> PathBuf {
    dir.join("pretrained").join("R50+ViT-B_16.npz")
}

/// Runs the downloads that were asked for; what is already complete is kept. Each is
/// tried even when the other fails, and every failure is reported.
pub fn run(options: &Options) -> Result<()> {
    let mut failures = Vec::new();
    if options.weights {
        if let Err(err) = download_weights(&options.dir) {
            failures.push(format!("{err:#}"));
        }
    }
    if options.acdc {
        if let Err(err) = download_acdc(&options.dir) {
            failures.push(format!("{err:#}"));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    Ok(())
}

fn download_weights(dir: &Path) -> Result<()> {
    let target = vit_weights(dir);
    if !target.is_file() {
        if let Err(err) = fetch(VIT_URL, &target, "the ViT weights") {
            bail!(
                "{err:#}\nThe weights are optional (training then starts from scratch). To use \
                 them, download {VIT_URL} by hand to {}",
                target.display()
            );
        }
    }
    check_npz(&target)?;
    eprintln!("weights ready: {}", target.display());
    Ok(())
}

fn download_acdc(dir: &Path) -> Result<()> {
    let target = acdc_dir(dir);
    if target.is_dir() {
        check_acdc_tree(&target)?;
        eprintln!("ACDC ready: {}", target.display());
        return Ok(());
    }
    let zip = dir.join("acdc.zip");
    if !zip.is_file() {
        if let Err(err) = fetch(ACDC_URL, &zip, "ACDC") {
            bail!(
                "{err:#}\nGet ACDC from {ACDC_PAGE} (registration may be required), unzip it \
                 and pass the folder holding training/ and testing/ with --data PATH"
            );
        }
    }
    let staging = dir.join(format!("acdc.unpacking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = unzip(&zip, &staging).and_then(|()| {
        let root = find_acdc_root(&staging)?.with_context(|| {
            format!(
                "{} holds no folder with training/ and testing/ patients; is it the ACDC \
                 release? Delete it to download again",
                zip.display()
            )
        })?;
        check_acdc_tree(&root)?;
        std::fs::rename(&root, &target)
            .with_context(|| format!("cannot move {} to {}", root.display(), target.display()))
    });
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    std::fs::remove_file(&zip).with_context(|| format!("cannot remove {}", zip.display()))?;
    eprintln!("ACDC ready: {}", target.display());
    Ok(())
}

/// Downloads `url` to `target` through `target.part`, resuming a partial file.
fn fetch(url: &str, target: &Path, what: &str) -> Result<()> {
    let parent = target
        .parent()
        .context("download target has no parent folder")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let part = target.with_extension(format!(
        "{}.part",
        target.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    eprintln!("downloading {what} from {url}");
    let status = Command::new("curl")
        .args(["--fail", "--location", "--continue-at", "-", "--retry", "3"])
        .args(["--connect-timeout", "20", "--progress-bar", "--output"])
        .arg(&part)
        .arg(url)
        .status()
        .context("cannot run curl (is it installed?)")?;
    if !status.success() {
        let why = match status.code() {
            Some(5 | 6 | 7 | 28 | 35) => "the server cannot be reached (offline?)".to_owned(),
            Some(22) => "the server refused the request (registration or login needed?)".into(),
            Some(code) => format!("curl failed with exit code {code}"),
            None => "curl was interrupted".to_owned(),
        };
        let resumable = std::fs::metadata(&part).is_ok_and(|m| m.len() > 0);
        if resumable {
            bail!(
                "downloading {what} failed: {why}; the partial file {} is kept and resumed \
                 by the next run",
                part.display()
            );
        }
        let _ = std::fs::remove_file(&part);
        bail!("downloading {what} failed: {why}");
    }
    std::fs::rename(&part, target)
        .with_context(|| format!("cannot move {} into place", part.display()))
}

fn unzip(zip: &Path, into: &Path) -> Result<()> {
    let mut header = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open(zip).with_context(|| format!("cannot open {}", zip.display()))?,
        &mut header,
    )
    .with_context(|| format!("{} is empty or truncated", zip.display()))?;
    if &header != b"PK\x03\x04" {
        bail!(
            "{} is not a zip archive (a login page instead of the data?); delete it, and \
             download ACDC from {ACDC_PAGE} by hand if registration is required",
            zip.display()
        );
    }
    std::fs::create_dir_all(into)?;
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(zip)
        .arg(into)
        .status()
        .context("cannot run python3 to unpack the zip")?;
    if !status.success() {
        bail!(
            "{} could not be unpacked (corrupt?); delete it to download again",
            zip.display()
        );
    }
    Ok(())
}

/// The first folder under `dir` (breadth first) with both `training/` and `testing/`.
fn find_acdc_root(dir: &Path) -> Result<Option<PathBuf>> {
    let mut queue = vec![dir.to_path_buf()];
    while let Some(folder) = queue.pop() {
        if folder.join("training").is_dir() && folder.join("testing").is_dir() {
            return Ok(Some(folder));
        }
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                queue.insert(0, path);
            }
        }
    }
    Ok(None)
}

/// Checks the ACDC release structure: patient folders with an Info.cfg in each split.
fn check_acdc_tree(root: &Path) -> Result<()> {
    for (split, expected) in [("training", ACDC_TRAINING), ("testing", ACDC_TESTING)] {
        let folder = root.join(split);
        let mut found = 0;
        for entry in std::fs::read_dir(&folder)
            .with_context(|| format!("{} is missing", folder.display()))?
        {
            let path = entry?.path();
            let is_patient = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("patient"));
            if is_patient && path.is_dir() {
                if !path.join("Info.cfg").is_file() {
                    bail!("{} has no Info.cfg", path.display());
                }
                found += 1;
            }
        }
        if found != expected {
            bail!(
                "{} holds {found} patients, the ACDC release has {expected}",
                folder.display()
            );
        }
    }
    Ok(())
}

/// Checks that a downloaded `.npz` is a zip archive (numpy's npz container).
fn check_npz(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !bytes.starts_with(b"PK") {
        bail!(
            "{} is not an npz archive; delete it and download again",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-dl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn patients(root: &Path, split: &str, n: usize) {
        for i in 1..=n {
            let p = root.join(split).join(format!("patient{i:03}"));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("Info.cfg"), "ED: 1\n").unwrap();
        }
    }

    #[test]
    fn acdc_root_is_found_below_the_zip_folder_and_checked() {
        let dir = scratch("root");
        let root = dir.join("ACDC").join("database");
        patients(&root, "training", ACDC_TRAINING);
        patients(&root, "testing", ACDC_TESTING);
        assert_eq!(find_acdc_root(&dir).unwrap(), Some(root.clone()));
        check_acdc_tree(&root).unwrap();

        std::fs::remove_file(root.join("testing/patient007/Info.cfg")).unwrap();
        let err = check_acdc_tree(&root).unwrap_err().to_string();
        assert!(
            err.contains("patient007") && err.contains("Info.cfg"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn incomplete_acdc_tree_is_rejected_with_counts() {
        let dir = scratch("short");
        patients(&dir, "training", 99);
        patients(&dir, "testing", ACDC_TESTING);
        let err = check_acdc_tree(&dir).unwrap_err().to_string();
        assert!(err.contains("99") && err.contains("100"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_login_page_is_not_taken_for_the_zip() {
        let dir = scratch("html");
        let zip = dir.join("acdc.zip");
        std::fs::write(&zip, "<html>please log in</html>").unwrap();
        let err = unzip(&zip, &dir.join("out")).unwrap_err().to_string();
        assert!(err.contains("not a zip archive"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_default_to_both_downloads() {
        let opts = Options::parse(&[]).unwrap();
        assert!(opts.acdc && opts.weights);
        let opts = Options::parse(&["--weights".to_owned()]).unwrap();
        assert!(!opts.acdc && opts.weights);
        assert!(Options::parse(&["--acdcc".to_owned()]).is_err());
    }
}
