//! Run directories: the run configuration (a TOML file plus `--set KEY=VALUE` overrides),
//! the data it trains on (an ACDC tree, or the synthetic cohort generated into
//! `RUN/data`) and the stage folders (see [`crate::graph`] for what each holds and when
//! it is done or stale).
//!
//! ```text
//! RUN/config.toml      the configuration the run's stages were last made with
//! RUN/data/            synthetic cohort (only when no ACDC tree is given)
//! RUN/baseline/        train:    engine files + eval.json + stage.json
//! RUN/search/          search:   engine files + eval.json + stage.json
//! RUN/compressed/      compress: model.toml + weights.safetensors + subnet.toml +
//!                                equivalence.json + eval.json + stage.json
//! RUN/finetuned/       finetune: engine files + model/ (compressed format) + eval.json +
//!                                stage.json
//! RUN/bench/           bench:    latency.json (every model, every batch size)
//! RUN/report/          report:   report.md + report.json + PNG figures
//! RUN/evals/NAME/      eval:     side evaluations (other data), never the test set
//! RUN/measurements/    bench:    side latency measurements (other options)
//! ```
//!
//! Paths inside the run are stored relative to it (`data.root = "data"` for the
//! synthetic cohort), so a copied or moved run directory is the same run; an external
//! data root is identified by content, and `--data NEWPATH` points to a moved copy.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_search::config::{DeviceChoice, SplitConfig};
use slimseg_search::data::{Cohort, load_cohort};
use slimseg_search::{Error as SearchError, RunConfig};

use crate::digest::DataIdentity;
use crate::lock::{Access, RunLock, remove_leftovers};

/// Parses `--device`: `auto` (CUDA device 0 when available, else the CPU), `cpu`, `cuda`
/// (device 0) or `cuda:N`.
pub fn parse_device(s: &str) -> std::result::Result<DeviceChoice, String> {
    s.parse()
}

/// Size of the synthetic cohort generated when no ACDC tree is given.
#[derive(Debug, Clone, Args)]
pub struct SynthSize {
    /// Synthetic cohort: training patients (ids 1..). The default matches the measured
    /// tiny schedule of configs/tiny.toml (about 250 slices, 31 steps of 8 per epoch).
    #[arg(long, default_value_t = 16)]
    pub synth_train: usize,
    /// Synthetic cohort: validation patients (ids after the training ones).
    #[arg(long, default_value_t = 2)]
    pub synth_val: usize,
    /// Synthetic cohort: test patients (ids from 101, in `testing/`). The default, 60
    /// test volumes (ED and ES), keeps the 95% interval of a paired Dice difference
    /// within about 1 point at the per-volume spread of tiny's models (sd 2.5-4 points);
    /// with 6 patients it was about 2 points either way.
    #[arg(long, default_value_t = 30)]
    pub synth_test: usize,
}

/// Which run, and its configuration (every command that opens a run).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Run directory, one folder per stage. Default: `runs/<config file stem>`.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Run configuration (TOML: `[model]`, `[data]`, `[train]`, `[search]`, `[select]`,
    /// `[finetune]`, `[bench]`, `[controls]`, `[sweep]`). Default: `RUN/config.toml`, the
    /// configuration the run's stages were last made with.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a configuration value, e.g. `--set train.epochs=3` (the value is TOML;
    /// bare words are strings). Repeatable. Unknown keys are errors.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Device (overrides `train.device`): auto (CUDA device 0 when available, else the
    /// CPU), cpu, cuda (device 0) or cuda:N.
    #[arg(long, value_parser = parse_device, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: Option<DeviceChoice>,
}

impl RunArgs {
    /// Just a run directory, with its own configuration.
    pub fn dir(run: &Path) -> Self {
        RunArgs {
            run: Some(run.to_path_buf()),
            config: None,
            set: Vec::new(),
            device: None,
        }
    }
}

/// Where the data is (commands that read it).
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Root of an ACDC tree (`training/`, `testing/`). Without it, and without
    /// `data.root` in the configuration, a synthetic cohort is generated into `RUN/data`.
    /// A run whose data moved accepts the new place if the content is the same.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// How a command opens a run.
#[derive(Debug, Clone, Copy)]
pub struct Open<'a> {
    /// `--data`, when the command takes it.
    pub data: Option<&'a DataArgs>,
    /// The synthetic cohort's size, when the command may generate it.
    pub synth: Option<&'a SynthSize>,
    /// `--pretrained`, when the command takes it.
    pub pretrained: Option<&'a Path>,
    /// Whether the command reads the data (then the data root must be there).
    pub reads_data: bool,
    /// Read-only or writing.
    pub access: Access,
}

impl Open<'_> {
    /// A writing command that does not read the data.
    pub fn write() -> Self {
        Open {
            data: None,
            synth: None,
            pretrained: None,
            reads_data: false,
            access: Access::Write,
        }
    }

    /// A read-only command that does not read the data.
    pub fn read() -> Self {
        Open {
            access: Access::Read,
            ..Open::write()
        }
    }
}

/// A resolved run: its directory and configuration, and the lock that makes this
/// process its only user while the value lives.
#[derive(Debug)]
pub struct Run {
    /// The run directory.
    pub root: PathBuf,
    /// The configuration, with overrides applied and `data.root` resolved (absolute).
    pub cfg: RunConfig,
    /// The data's identity, computed on first use.
    data_identity: OnceCell<DataIdentity>,
    /// Digests of external files (checkpoints), computed once per command.
    file_digests: RefCell<HashMap<PathBuf, String>>,
    /// The run directory's lock, held for the whole command.
    _lock: RunLock,
}

/// Parses a `--set` value as TOML, falling back to a plain string.
fn parse_value(v: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("x = {v}"))
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}

/// Applies `KEY=VALUE` overrides (dotted keys) to a TOML document.
pub fn apply_overrides(text: &str, sets: &[String], origin: &Path) -> Result<String> {
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!("{}: {}", origin.display(), e.message()))?;
    for s in sets {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {s}: expected KEY=VALUE, e.g. train.epochs=3"))?;
        let parts: Vec<&str> = key.trim().split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("--set {s}: `{key}` is not a dotted key like train.epochs");
        }
        let (last, tables) = parts.split_last().expect("split gives at least one part");
        let mut table = &mut doc;
        for (i, p) in tables.iter().enumerate() {
            table = table
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    anyhow!(
                        "--set {s}: `{}` is a value, not a table",
                        parts[..=i].join(".")
                    )
                })?;
        }
        table.insert(last.to_string(), parse_value(value.trim()));
    }
    Ok(toml::to_string(&doc)?)
}

/// Reads a run configuration file with overrides; errors name the file (and the key).
pub fn load_config(path: &Path, sets: &[String]) -> Result<RunConfig> {
    if sets.is_empty() {
        return Ok(RunConfig::from_toml_file(path)?);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    let merged = apply_overrides(&text, sets, path)?;
    RunConfig::from_toml_str(&merged).map_err(|e| {
        let reason = match e {
            SearchError::Parse { reason, .. } => reason,
            other => other.to_string(),
        };
        anyhow!(
            "{} with --set {}: {reason}",
            path.display(),
            sets.join(" --set ")
        )
    })
}

/// `p`, joined to the working directory when relative.
pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// The synthetic cohort's split: training ids, validation ids after them, test ids from 101.
fn synth_split(root: &Path, size: &SynthSize) -> Result<SplitConfig> {
    let manifest = root.join("synth.json");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", manifest.display()))?;
    let cfg: SynthConfig = serde_json::from_value(v["config"].clone())
        .with_context(|| format!("{}: no synthetic cohort configuration", manifest.display()))?;
    let val = size.synth_val as u32;
    let n = cfg.training as u32;
    if n <= val {
        bail!(
            "{}: the cohort has {n} training patients, too few for {val} validation patients \
             and at least one training patient",
            manifest.display()
        );
    }
    if cfg.testing == 0 {
        bail!(
            "{}: the cohort has no test patients (generate it with --synth-test >= 1)",
            manifest.display()
        );
    }
    let first_test = (n + 1).max(101);
    Ok(SplitConfig::Explicit {
        train: (1..=n - val).collect(),
        val: (n - val + 1..=n).collect(),
        test: (first_test..first_test + cfg.testing as u32).collect(),
    })
}

/// Generates the synthetic cohort into `root` unless a complete one is there.
fn ensure_synth(root: &Path, size: &SynthSize) -> Result<()> {
    if root.join("synth.json").exists() {
        return Ok(());
    }
    if size.synth_train == 0 || size.synth_test == 0 {
        bail!("--synth-train and --synth-test must be at least 1");
    }
    let cfg = SynthConfig::small(size.synth_train + size.synth_val, size.synth_test, 1234);
    eprintln!(
        "generating a synthetic cohort ({} training, {} validation, {} test patients) in {}",
        size.synth_train,
        size.synth_val,
        size.synth_test,
        root.display()
    );
    let s = generate(root, &cfg)
        .with_context(|| format!("cannot write the synthetic cohort to {}", root.display()))?;
    eprintln!("  {} patients in {:.1} s", s.patients, s.seconds);
    Ok(())
}

impl Run {
    /// Resolves the run directory and configuration and takes the run's lock. The
    /// configuration is `--config`, else `RUN/config.toml`, with `--set` and `--device`
    /// applied. `data.root` is `--data`, else the configuration's (relative to the run
    /// when it is inside it), else, when the command may generate it, the synthetic
    /// cohort in `RUN/data`. Writes `RUN/config.toml` when missing.
    pub fn open(args: &RunArgs, how: Open<'_>) -> Result<Run> {
        let root = match (&args.run, &args.config) {
            (Some(r), _) => r.clone(),
            (None, Some(c)) => {
                let stem = c
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "run".into());
                PathBuf::from("runs").join(stem)
            }
            (None, None) => {
                bail!("give the run directory (--run RUN) or a configuration (--config FILE)")
            }
        };
        let saved = root.join("config.toml");
        let mut cfg = match &args.config {
            Some(path) => {
                // Paths in a configuration file given on the command line are relative
                // to the working directory; inside the run they become absolute (or
                // relative to the run, see `save_config`).
                let mut c = load_config(path, &args.set)?;
                for p in [
                    c.data.root.as_mut(),
                    c.train.pretrained.as_mut(),
                    c.train.import.as_mut(),
                ]
                .into_iter()
                .flatten()
                {
                    *p = absolute(p)?;
                }
                c
            }
            None if saved.exists() => {
                let mut c = load_config(&saved, &args.set)?;
                // Inside a run, relative paths are relative to the run.
                if let Some(r) = c.data.root.as_mut().filter(|r| r.is_relative()) {
                    *r = absolute(&root)?.join(&*r);
                }
                c
            }
            None => bail!(
                "{}: no configuration yet; pass --config FILE (e.g. configs/tiny.toml)",
                saved.display()
            ),
        };
        if let Some(d) = args.device {
            cfg.train.device = d;
        }
        if let Some(p) = how.pretrained {
            if !p.is_file() {
                bail!(
                    "{}: no such file (the ImageNet-21k R50+ViT-B_16.npz; `cargo xtask \
                     download` puts it in data/pretrained/)",
                    p.display()
                );
            }
            cfg.train.pretrained = Some(absolute(p)?);
        }
        if let Some(d) = how.data.and_then(|d| d.data.as_ref()) {
            if !d.is_dir() {
                bail!(
                    "{}: not a directory (expected an ACDC tree with training/ and testing/)",
                    d.display()
                );
            }
            cfg.data.root = Some(absolute(d)?);
        }
        if cfg.train.threads > 0 {
            tch::set_num_threads(cfg.train.threads as i32);
        }
        // Lock before anything of the run is written (the cohort, config.toml, stages).
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create the run directory {}", root.display()))?;
        let lock = RunLock::acquire(&root, how.access)?;
        if how.access == Access::Write {
            let (n, bytes) = remove_leftovers(&root)?;
            if n > 0 {
                eprintln!(
                    "removed {n} temporary file(s) of interrupted writes from {} ({:.1} MB)",
                    root.display(),
                    bytes as f64 / 1e6
                );
            }
        }
        if let (Some(size), None) = (how.synth, &cfg.data.root) {
            let data = absolute(&root.join("data"))?;
            ensure_synth(&data, size)?;
            cfg.data.split = synth_split(&data, size)?;
            cfg.data.root = Some(data);
        }
        if let Some(r) = cfg.data.root.as_ref().filter(|_| how.reads_data) {
            if !r.is_dir() {
                bail!(
                    "{}: the run's data root is not there; if the data moved, give its new \
                     place with --data PATH (it is recognised by content)",
                    r.display()
                );
            }
        }
        let run = Run {
            root,
            cfg,
            data_identity: OnceCell::new(),
            file_digests: RefCell::new(HashMap::new()),
            _lock: lock,
        };
        if how.access == Access::Write && !saved.exists() && run.cfg.data.root.is_some() {
            run.save_config()?;
        }
        Ok(run)
    }

    /// Writes the configuration to `RUN/config.toml` (atomically): the data root relative
    /// to the run when inside it, and the run-time keys (device, threads, progress) of the
    /// file already there, which no stage's result depends on.
    pub fn save_config(&self) -> Result<()> {
        let saved = self.root.join("config.toml");
        let mut c = self.cfg.clone();
        if let Some(r) = &c.data.root {
            let run = absolute(&self.root)?;
            if let Ok(rel) = r.strip_prefix(&run) {
                c.data.root = Some(rel.to_path_buf());
            }
        }
        if saved.exists() {
            if let Ok(before) = RunConfig::from_toml_file(&saved) {
                c.train.device = before.train.device;
                c.train.threads = before.train.threads;
                c.train.progress = before.train.progress;
            }
        }
        Ok(c.save_toml(&saved)?)
    }

    /// A stage folder.
    pub fn stage(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The device of `train.device`.
    pub fn device(&self) -> Result<tch::Device> {
        Ok(self.cfg.train.device.device()?)
    }

    /// Whether the data is the synthetic cohort (its tree holds `synth.json`).
    pub fn synthetic(&self) -> bool {
        self.cfg
            .data
            .root
            .as_ref()
            .is_none_or(|r| r.join("synth.json").exists())
    }

    /// The data root.
    pub fn data_root(&self) -> Result<&Path> {
        self.cfg
            .data
            .root
            .as_deref()
            .ok_or_else(|| anyhow!("no data: pass --data ACDC_ROOT"))
    }

    /// The identity of the run's data (patients of the split and a digest of their
    /// files), computed once.
    pub fn data_identity(&self) -> Result<&DataIdentity> {
        if let Some(d) = self.data_identity.get() {
            return Ok(d);
        }
        let d = DataIdentity::of_run_data(self.data_root()?, &self.cfg.data)?;
        Ok(self.data_identity.get_or_init(|| d))
    }

    /// The SHA-256 of an external file the run reads (a checkpoint), hashed once per
    /// command however often the stage graph is evaluated.
    pub fn file_digest(&self, path: &Path) -> Result<String> {
        if let Some(d) = self.file_digests.borrow().get(path) {
            return Ok(d.clone());
        }
        let d = crate::digest::of_file(path)?;
        self.file_digests
            .borrow_mut()
            .insert(path.to_path_buf(), d.clone());
        Ok(d)
    }

    /// Loads the training, validation and test sets.
    pub fn cohort(&self) -> Result<Cohort> {
        let root = self.data_root()?;
        let t = std::time::Instant::now();
        let cohort = load_cohort(root, &self.cfg.data)
            .with_context(|| format!("cannot load the dataset at {}", root.display()))?;
        if cohort.test.is_empty() {
            bail!("{}: the test split is empty", root.display());
        }
        eprintln!(
            "data {}: {} training slices, {} validation and {} test volumes ({:.1} s)",
            root.display(),
            cohort.train.len(),
            cohort.val.len(),
            cohort.test.len(),
            t.elapsed().as_secs_f64()
        );
        Ok(cohort)
    }
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value)?;
    slimseg_data::write_atomic(path, s.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads JSON; errors name the file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&s)
        .with_context(|| format!("{}: corrupt or unexpected JSON", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_set_nested_keys_and_typed_values() {
        let text = "[train]\nepochs = 12\nlr = 0.001\n";
        let out = apply_overrides(
            text,
            &["train.epochs=3".into(), "train.optimizer=sgd".into()],
            Path::new("x.toml"),
        )
        .unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["train"]["epochs"].as_integer(), Some(3));
        assert_eq!(t["train"]["optimizer"].as_str(), Some("sgd"));
        assert_eq!(t["train"]["lr"].as_float(), Some(0.001));
    }

    #[test]
    fn override_without_equals_or_into_a_value_is_an_error() {
        let e = apply_overrides(
            "[train]\nepochs = 1\n",
            &["train.epochs".into()],
            Path::new("x"),
        );
        assert!(e.unwrap_err().to_string().contains("KEY=VALUE"));
        let e = apply_overrides(
            "[train]\nepochs = 1\n",
            &["train.epochs.x=1".into()],
            Path::new("x"),
        );
        assert!(e.unwrap_err().to_string().contains("train.epochs"));
    }
}
