//! Run directories: the run configuration (a TOML file plus `--set KEY=VALUE` overrides),
//! the data it trains on (an ACDC tree, or the synthetic cohort generated into
//! `RUN/data`), the stage folders and their completion records.
//!
//! ```text
//! RUN/config.toml      the resolved configuration of the first stage run here
//! RUN/data/            synthetic cohort (only when no ACDC tree is given)
//! RUN/baseline/        train:    engine files + eval.json + stage.json
//! RUN/search/          search:   engine files + subnet.toml + eval.json + stage.json
//! RUN/compressed/      compress: model.toml + weights.safetensors + subnet.toml +
//!                                equivalence.json + eval.json + latency.json + stage.json
//! RUN/finetuned/       finetune: engine files + model/ (compressed format) + eval.json +
//!                                stage.json
//! RUN/report/          report:   report.md + report.json + PNG figures
//! ```
//!
//! A stage is complete when its `stage.json` exists; it is written last, atomically.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use slimseg_data::synth::{SynthConfig, generate};
use slimseg_search::config::{DeviceChoice, SplitConfig};
use slimseg_search::data::{Cohort, load_cohort};
use slimseg_search::{Error as SearchError, RunConfig};

use crate::lock::{Access, RunLock, remove_leftovers};

/// The stage folders in pipeline order.
pub const STAGES: [&str; 4] = ["baseline", "search", "compressed", "finetuned"];

/// Completion record of a stage.
pub const STAGE_RECORD: &str = "stage.json";

/// Device choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// CUDA device 0 when available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device 0 (an error when CUDA is unavailable).
    Cuda,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
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
    /// Synthetic cohort: test patients (ids from 101, in `testing/`).
    #[arg(long, default_value_t = 6)]
    pub synth_test: usize,
}

/// Options shared by every stage command.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Run directory, one folder per stage. Default: `runs/<config file stem>`.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Run configuration (TOML: `[model]`, `[data]`, `[train]`, `[search]`, `[select]`,
    /// `[finetune]`). Default: `RUN/config.toml`, written by the first stage run in RUN.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Root of an ACDC tree (`training/`, `testing/`). Without it, and without
    /// `data.root` in the configuration, a synthetic cohort is generated into `RUN/data`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override a configuration value, e.g. `--set train.epochs=3` (the value is TOML;
    /// bare words are strings). Repeatable. Unknown keys are errors.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Device (overrides `train.device`): auto = CUDA when available.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// ImageNet-21k `R50+ViT-B_16.npz` that initialises the baseline's ResNet and
    /// transformer (sets `train.pretrained`; the `[model]` widths must match the file).
    #[arg(long, value_name = "NPZ")]
    pub pretrained: Option<PathBuf>,
    #[command(flatten)]
    pub synth: SynthSize,
}

/// A resolved run: its directory and configuration, and the lock that makes this
/// process its only user while the value lives.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run directory.
    pub root: PathBuf,
    /// The configuration, with overrides applied and `data.root` resolved when data is used.
    pub cfg: RunConfig,
    /// The run directory's lock, held for the whole command.
    _lock: RunLock,
}

/// What `stage.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage folder name.
    pub stage: String,
    /// Wall seconds of the call that completed the stage.
    pub seconds: f64,
    /// Completion time, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// The run configuration with run-time-only keys (device, threads, progress)
    /// normalised, to recognise a stage made with another configuration.
    pub config: String,
}

/// The configuration a stage's result depends on, as compared between runs: keys that do
/// not change results (device, threads, progress line) are normalised, the baseline
/// ignores `[search]` and `[select]`, and the stages before the fine-tuning ignore
/// `[finetune]`, which only later stages read.
pub fn config_identity(cfg: &RunConfig, stage: &str) -> Result<String> {
    let mut c = cfg.clone();
    if stage == "baseline" {
        c.search = Default::default();
        c.select = Default::default();
    }
    if matches!(stage, "baseline" | "search" | "compressed") {
        c.finetune = Default::default();
    }
    Ok(c.result_identity()?)
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
    /// Resolves the run directory and configuration. With `need_data`, `data.root` is
    /// resolved too: `--data`, else the configuration's `data.root`, else the synthetic
    /// cohort in `RUN/data` (generated if missing). Writes `RUN/config.toml` when missing.
    pub fn open(args: &RunArgs, need_data: bool) -> Result<Run> {
        Self::open_with(args, need_data, Access::Write)
    }

    /// Opens a run only to read it (`predict`, `info`): a shared lock, which other
    /// readers may hold too but no writer; nothing is written.
    pub fn open_read_only(args: &RunArgs) -> Result<Run> {
        Self::open_with(args, false, Access::Read)
    }

    fn open_with(args: &RunArgs, need_data: bool, access: Access) -> Result<Run> {
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
            Some(path) => load_config(path, &args.set)?,
            None if saved.exists() => load_config(&saved, &args.set)?,
            None => bail!(
                "{}: no configuration yet; pass --config FILE (e.g. configs/tiny.toml)",
                saved.display()
            ),
        };
        if let Some(d) = args.device {
            cfg.train.device = d.into();
        }
        if let Some(p) = &args.pretrained {
            if !p.is_file() {
                bail!(
                    "{}: no such file (the ImageNet-21k R50+ViT-B_16.npz; `cargo xtask \
                     download` puts it in data/pretrained/)",
                    p.display()
                );
            }
            cfg.train.pretrained = Some(absolute(p)?);
        }
        if let Some(d) = &args.data {
            if !d.is_dir() {
                bail!(
                    "{}: not a directory (expected an ACDC tree with training/ and testing/)",
                    d.display()
                );
            }
            cfg.data.root = Some(absolute(d)?);
        }
        // Lock before anything of the run is written (the cohort, config.toml, stages).
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create the run directory {}", root.display()))?;
        let lock = RunLock::acquire(&root, access)?;
        if access == Access::Write {
            let (n, bytes) = remove_leftovers(&root)?;
            if n > 0 {
                eprintln!(
                    "removed {n} temporary file(s) of interrupted writes from {} ({:.1} MB)",
                    root.display(),
                    bytes as f64 / 1e6
                );
            }
        }
        if need_data && cfg.data.root.is_none() {
            let data = absolute(&root.join("data"))?;
            ensure_synth(&data, &args.synth)?;
            cfg.data.split = synth_split(&data, &args.synth)?;
            cfg.data.root = Some(data);
        }
        if access == Access::Write && !saved.exists() && (need_data || cfg.data.root.is_some()) {
            cfg.save_toml(&saved)?;
        }
        Ok(Run {
            root,
            cfg,
            _lock: lock,
        })
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

    /// Loads the training, validation and test sets.
    pub fn cohort(&self) -> Result<Cohort> {
        let root = self
            .cfg
            .data
            .root
            .as_ref()
            .ok_or_else(|| anyhow!("no data: pass --data ACDC_ROOT"))?;
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

    /// The completion record of a stage, if the stage is complete. A record made with
    /// another configuration is an error naming the folder.
    pub fn completed(&self, stage: &str) -> Result<Option<StageRecord>> {
        let path = self.stage(stage).join(STAGE_RECORD);
        if !path.exists() {
            return Ok(None);
        }
        let rec: StageRecord = read_json(&path)?;
        if rec.config != config_identity(&self.cfg, stage)? {
            bail!(
                "{} was made with a different configuration than the one given now; use \
                 another --run directory, or redo the stage with --force",
                self.stage(stage).display()
            );
        }
        Ok(Some(rec))
    }

    /// Prepares a stage folder for a run: refuses a complete stage unless `force`, which
    /// removes its completion record and checkpoints (the stage restarts).
    pub fn begin(&self, stage: &str, force: bool) -> Result<PathBuf> {
        let dir = self.stage(stage);
        let rec = dir.join(STAGE_RECORD);
        if rec.exists() {
            if !force {
                bail!(
                    "{} is complete ({}); pass --force to redo it",
                    dir.display(),
                    rec.display()
                );
            }
            std::fs::remove_file(&rec)
                .with_context(|| format!("cannot remove {}", rec.display()))?;
            let ck = dir.join("checkpoints");
            if ck.exists() {
                std::fs::remove_dir_all(&ck)
                    .with_context(|| format!("cannot remove {}", ck.display()))?;
            }
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Marks a stage complete (written last, atomically).
    pub fn finish(&self, stage: &str, seconds: f64) -> Result<()> {
        let rec = StageRecord {
            stage: stage.to_string(),
            seconds,
            finished_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            config: config_identity(&self.cfg, stage)?,
        };
        write_json(&self.stage(stage).join(STAGE_RECORD), &rec)
    }

    /// Requires a file of an earlier stage, naming the command that makes it.
    pub fn require(&self, stage: &str, file: &str, command: &str) -> Result<PathBuf> {
        let path = self.stage(stage).join(file);
        if !path.exists() {
            bail!(
                "{}: missing; run `slimseg {command} --run {}` first",
                path.display(),
                self.root.display()
            );
        }
        Ok(path)
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
    fn baseline_identity_ignores_search_and_select_but_not_train() {
        let a = RunConfig::with_model(slimseg_model::ModelConfig::tiny());
        let mut b = a.clone();
        b.search.epochs = Some(2);
        b.train.device = DeviceChoice::Cpu;
        assert_eq!(
            config_identity(&a, "baseline").unwrap(),
            config_identity(&b, "baseline").unwrap()
        );
        assert_ne!(
            config_identity(&a, "search").unwrap(),
            config_identity(&b, "search").unwrap()
        );
        b.train.epochs += 1;
        assert_ne!(
            config_identity(&a, "baseline").unwrap(),
            config_identity(&b, "baseline").unwrap()
        );
    }

    #[test]
    fn only_the_finetuning_depends_on_the_finetune_table() {
        let a = RunConfig::with_model(slimseg_model::ModelConfig::tiny());
        let mut b = a.clone();
        b.finetune.epochs = Some(7);
        for stage in ["baseline", "search", "compressed"] {
            assert_eq!(
                config_identity(&a, stage).unwrap(),
                config_identity(&b, stage).unwrap(),
                "{stage}"
            );
        }
        assert_ne!(
            config_identity(&a, "finetuned").unwrap(),
            config_identity(&b, "finetuned").unwrap()
        );
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
