//! The stage graph of a run, declared once: each stage's name, the configuration keys it
//! reads, whether it reads the data, the upstream files it consumes, the files it
//! produces and the command that makes it. `reproduce`, the single-stage commands,
//! `status` and the report all go through it.
//!
//! A complete stage holds `stage.json`: its [`Fingerprint`] (the values of the keys it
//! reads, overrides of the command line included; the content digests of the upstream
//! files it consumed; the data's identity; the digests of external files such as the
//! pretrained checkpoint) and the digests of its outputs. A stage is *done* when the
//! fingerprint it would be made with now equals the recorded one, *stale* (with the
//! differences as reasons) when not, or when an upstream stage is stale or missing, and
//! *missing* without a record.
//!
//! Making a stage that is done or stale builds it in a staging folder beside it
//! (`.NAME.partial-PID-N`) and exchanges the two folders atomically only when it
//! succeeded, so a failed or interrupted redo leaves the previous stage as it was. A
//! missing stage is built in place, so an interrupted training resumes from its
//! checkpoints when it is made again from the same inputs (`inputs.json`); from other
//! inputs it restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use slimseg_model::PixelHead;
use slimseg_search::RunConfig;
use slimseg_search::data::Cohort;

use crate::digest::{self, DataIdentity};
use crate::run::{Run, read_json, write_json};
use crate::stages;

/// Completion record of a stage.
pub const STAGE_RECORD: &str = "stage.json";
/// What an interrupted in-place stage was being made from.
pub const INPUTS_FILE: &str = "inputs.json";

/// An upstream stage and the files of it that a stage consumes.
#[derive(Debug)]
pub struct Upstream {
    /// Upstream stage name.
    pub stage: &'static str,
    /// Files consumed (relative to its folder); empty: every output.
    pub files: &'static [&'static str],
    /// Whether the stage can be made without it (the report of an unfinished run). An
    /// upstream stage that is off never holds a stage back.
    pub optional: bool,
}

/// Makes a stage into a folder.
pub type Make = fn(&mut Ctx<'_>, &Path) -> Result<()>;

/// One stage of the graph.
#[derive(Debug)]
pub struct StageDef {
    /// Folder name inside the run directory.
    pub name: &'static str,
    /// The `slimseg` command that makes it.
    pub command: &'static str,
    /// What it is, in a few words.
    pub about: &'static str,
    /// Configuration keys (tables or dotted keys) it reads. `device` and `threads` stand
    /// for the resolved device and CPU thread count, which only timings depend on; a key
    /// with a leading `!` is left out of a table read whole.
    pub reads: &'static [&'static str],
    /// Whether it reads the dataset.
    pub data: bool,
    /// Configuration keys naming external files it reads, identified by content.
    pub files: &'static [&'static str],
    /// Upstream files it consumes.
    pub upstream: &'static [Upstream],
    /// Main files it produces (its record digests every file of its folder).
    pub produces: &'static [&'static str],
    /// How it is made.
    pub make: Make,
    /// Why the stage is not part of a run with this configuration (`None`: it is).
    pub off: fn(&RunConfig) -> Option<String>,
    /// Prefixes of the sub-folders that carry their own records (the sweep's budgets):
    /// an interrupted stage restarting from other inputs keeps them (they check their
    /// own inputs); `--force` clears them too.
    pub own_records: &'static [&'static str],
}

impl StageDef {
    /// Why the stage is not part of a run with `cfg`, if it is not.
    pub fn off_because(&self, cfg: &RunConfig) -> Option<String> {
        (self.off)(cfg)
    }
}

fn always(_: &RunConfig) -> Option<String> {
    None
}

fn transunet_off(cfg: &RunConfig) -> Option<String> {
    if cfg.model.pixel_head == PixelHead::None {
        Some("the baseline is TransUNet itself (model.pixel_head = \"none\")".into())
    } else if !cfg.controls.transunet {
        Some("controls.transunet = false".into())
    } else {
        None
    }
}

fn uniform_off(cfg: &RunConfig) -> Option<String> {
    (!cfg.controls.uniform).then(|| "controls.uniform = false".into())
}

const fn up(stage: &'static str, files: &'static [&'static str]) -> Upstream {
    Upstream {
        stage,
        files,
        optional: false,
    }
}

const fn optional(stage: &'static str) -> Upstream {
    Upstream {
        stage,
        files: &[],
        optional: true,
    }
}

/// The stages in pipeline order.
pub static GRAPH: [StageDef; 10] = [
    StageDef {
        name: "baseline",
        command: "train",
        about: "the full model trained without gates",
        reads: &["model", "data", "train"],
        data: true,
        files: &["train.pretrained", "train.import"],
        upstream: &[],
        produces: &["best.safetensors", "eval.json"],
        make: stages::baseline::make,
        off: always,
        own_records: &[],
    },
    StageDef {
        name: "transunet",
        command: "train --transunet",
        about: "TransUNet, the baseline without the pixel module, trained the same way",
        reads: &[
            "model",
            "!model.pixel_head",
            "!model.df_min_magnitude",
            "data",
            "train",
            "!train.lambda_df",
        ],
        data: true,
        files: &["train.pretrained"],
        upstream: &[],
        produces: &["best.safetensors", "eval.json"],
        make: stages::baseline::make_transunet,
        off: transunet_off,
        own_records: &[],
    },
    StageDef {
        name: "search",
        command: "search",
        about: "soft gates trained from the baseline weights",
        reads: &["model", "data", "train", "search"],
        data: true,
        files: &[],
        upstream: &[up("baseline", &["best.safetensors"])],
        produces: &["weights.safetensors", "gates_end.json", "eval.json"],
        make: stages::search::make,
        off: always,
        own_records: &[],
    },
    StageDef {
        name: "profile",
        command: "profile",
        about: "the per-block latency table a latency budget selects by",
        reads: &["model", "profile", "device", "threads"],
        data: false,
        files: &[],
        upstream: &[],
        produces: &["latency_table.json"],
        make: stages::profile::make,
        off: stages::profile::off,
        own_records: &[],
    },
    StageDef {
        name: "compressed",
        command: "compress",
        about: "the subnet of the budget, sliced from the searched weights",
        reads: &["model", "data", "select"],
        data: true,
        files: &[],
        upstream: &[
            up("search", &["weights.safetensors", "gates_end.json"]),
            up("profile", &["latency_table.json"]),
        ],
        produces: &[
            "model.toml",
            "weights.safetensors",
            "subnet.toml",
            "eval.json",
        ],
        make: stages::compress::make,
        off: always,
        own_records: &[],
    },
    StageDef {
        name: "finetuned",
        command: "finetune",
        about: "the compressed model fine-tuned",
        reads: &[
            "model",
            "data",
            "train",
            "search.epochs",
            "search.lr",
            "finetune",
        ],
        data: true,
        files: &[],
        upstream: &[up("compressed", &["model.toml", "weights.safetensors"])],
        produces: &["model/model.toml", "model/weights.safetensors", "eval.json"],
        make: stages::finetune::make,
        off: always,
        own_records: &[],
    },
    StageDef {
        name: "uniform",
        command: "uniform",
        about: "the uniform-width control of the compressed model's cost, fine-tuned the same way",
        reads: &[
            "model",
            "data",
            "train",
            "search.epochs",
            "search.lr",
            "finetune",
            "controls.uniform",
        ],
        data: true,
        files: &[],
        upstream: &[
            up("baseline", &["best.safetensors"]),
            up("compressed", &["subnet.toml"]),
        ],
        produces: &[
            "model/model.toml",
            "model/weights.safetensors",
            "uniform.json",
            "eval.json",
        ],
        make: stages::uniform::make,
        off: uniform_off,
        own_records: &[],
    },
    StageDef {
        name: "bench",
        command: "bench",
        about: "each model's forward latency, and the Dice of each precision",
        reads: &[
            "model",
            "data",
            "train.eval_batch",
            "bench",
            "device",
            "threads",
        ],
        data: true,
        files: &[],
        upstream: &[
            up("transunet", &["best.safetensors"]),
            up("baseline", &["best.safetensors"]),
            up("search", &["weights.safetensors"]),
            up("compressed", &["model.toml", "weights.safetensors"]),
            up(
                "finetuned",
                &["model/model.toml", "model/weights.safetensors"],
            ),
            up(
                "uniform",
                &["model/model.toml", "model/weights.safetensors"],
            ),
        ],
        produces: &["latency.json"],
        make: stages::bench::make,
        off: always,
        own_records: &[],
    },
    StageDef {
        name: "sweep",
        command: "sweep",
        about: "one subnet per budget of [sweep] from the one search, and its uniform control, fine-tuned and timed",
        reads: &[
            "model",
            "data",
            "train",
            "search.epochs",
            "search.lr",
            "select",
            "finetune",
            "controls.uniform",
            "sweep",
            "bench",
            "device",
            "threads",
        ],
        data: true,
        files: &[],
        upstream: &[
            up("baseline", &["best.safetensors"]),
            up("search", &["weights.safetensors", "gates_end.json"]),
            up("profile", &["latency_table.json"]),
        ],
        produces: &["sweep.json", "latency.json"],
        make: stages::sweep::make,
        off: stages::sweep::off,
        own_records: &["keep-"],
    },
    StageDef {
        name: "report",
        command: "report",
        about: "Markdown, JSON and figures",
        reads: &[],
        data: true,
        files: &[],
        upstream: &[
            optional("transunet"),
            optional("baseline"),
            optional("search"),
            optional("profile"),
            optional("compressed"),
            optional("finetuned"),
            optional("uniform"),
            optional("bench"),
            optional("sweep"),
        ],
        produces: &["report.md", "report.json"],
        make: crate::report::make,
        off: always,
        own_records: &[],
    },
];

/// The stage named `name`.
pub fn def(name: &str) -> &'static StageDef {
    GRAPH
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no stage `{name}` in the graph"))
}

/// What a stage was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Fingerprint {
    /// The configuration values it read, by dotted key, as TOML.
    pub config: BTreeMap<String, String>,
    /// Digests of the upstream files it consumed, by stage and file.
    pub upstream: BTreeMap<String, BTreeMap<String, String>>,
    /// The dataset's identity, for stages that read it.
    pub data: Option<DataIdentity>,
    /// Digests of external files it read, by configuration key (`train.pretrained`,
    /// `train.import`).
    pub files: BTreeMap<String, String>,
}

impl Fingerprint {
    /// A short identifier: the first 12 hex digits of the fingerprint's SHA-256.
    pub fn id(&self) -> String {
        let text = serde_json::to_string(self).expect("a fingerprint serialises");
        digest::of_text(&text)[..12].to_string()
    }

    /// How `self` (recorded) differs from `now`, in words.
    pub fn differences(&self, now: &Fingerprint) -> Vec<String> {
        let mut why = Vec::new();
        let keys: std::collections::BTreeSet<&String> =
            self.config.keys().chain(now.config.keys()).collect();
        for k in keys {
            let (a, b) = (self.config.get(k), now.config.get(k));
            if a != b {
                let show = |v: Option<&String>| v.map_or("(unset)".to_string(), |s| s.clone());
                why.push(format!("{k}: {} -> {}", show(a), show(b)));
            }
        }
        let stages: std::collections::BTreeSet<&String> =
            self.upstream.keys().chain(now.upstream.keys()).collect();
        for s in stages {
            match (self.upstream.get(s), now.upstream.get(s)) {
                (Some(a), Some(b)) if a != b => {
                    let files: Vec<&str> = a
                        .keys()
                        .chain(b.keys())
                        .filter(|f| a.get(*f) != b.get(*f))
                        .map(|f| f.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    why.push(format!("{s} changed ({})", files.join(", ")));
                }
                (Some(_), None) => why.push(format!("{s} is missing now")),
                (None, Some(_)) => why.push(format!("{s} was made since")),
                _ => {}
            }
        }
        match (&self.data, &now.data) {
            (Some(a), Some(b)) if a != b => {
                if a.patients != b.patients {
                    why.push(format!(
                        "the data's patients changed ({} -> {})",
                        a.patients.len(),
                        b.patients.len()
                    ));
                } else {
                    let short = |d: &str| d.chars().take(12).collect::<String>();
                    why.push(format!(
                        "the data's content changed (sha256 {} -> {})",
                        short(&a.digest),
                        short(&b.digest)
                    ));
                }
            }
            (a, b) if a.is_some() != b.is_some() => why.push("the data changed".into()),
            _ => {}
        }
        let keys: std::collections::BTreeSet<&String> =
            self.files.keys().chain(now.files.keys()).collect();
        for k in keys {
            if self.files.get(k) != now.files.get(k) {
                why.push(format!("the file of {k} changed"));
            }
        }
        why
    }
}

/// Who made a stage, with what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// slimseg version.
    pub slimseg: String,
    /// Git commit slimseg was built from.
    pub commit: String,
    /// libtorch version.
    pub libtorch: String,
    /// Device, in words.
    pub device: String,
    /// libtorch intra-op CPU threads.
    pub threads: usize,
}

impl Provenance {
    /// This process, on `device`.
    pub fn now(device: tch::Device) -> Self {
        Provenance {
            slimseg: env!("CARGO_PKG_VERSION").into(),
            commit: env!("SLIMSEG_COMMIT").into(),
            libtorch: slimseg_model::runtime::init()
                .version
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            device: slimseg_compress::latency::describe_device(device),
            threads: tch::get_num_threads().max(1) as usize,
        }
    }
}

/// What `stage.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name.
    pub stage: String,
    /// What it was made from.
    pub fingerprint: Fingerprint,
    /// [`Fingerprint::id`].
    pub id: String,
    /// SHA-256 of every file of the stage folder (checkpoints excluded) by relative path.
    pub outputs: BTreeMap<String, String>,
    /// Wall seconds of the call that made it.
    pub seconds: f64,
    /// Completion time, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// Who made it.
    pub made_by: Provenance,
}

/// The state of a stage.
#[derive(Debug, Clone)]
pub enum State {
    /// No completion record.
    Missing,
    /// Complete and made from what it would be made from now.
    Done(Box<StageRecord>),
    /// Complete but made from something else (or below such a stage); the reasons.
    Stale(Option<Box<StageRecord>>, Vec<String>),
    /// Not part of a run with this configuration (a control that is off); why. Its folder,
    /// if any, is left as it is.
    Off(String),
}

impl State {
    /// The record of a done stage.
    pub fn done(&self) -> Option<&StageRecord> {
        match self {
            State::Done(r) => Some(r),
            _ => None,
        }
    }

    /// The record, done or stale.
    pub fn record(&self) -> Option<&StageRecord> {
        match self {
            State::Done(r) | State::Stale(Some(r), _) => Some(r),
            _ => None,
        }
    }
}

/// The states of the stages evaluated so far, by name.
pub type States = BTreeMap<&'static str, State>;

/// Reads a stage's record: `Err(reason)` for one this slimseg cannot use.
fn read_record(path: &Path) -> Result<Option<std::result::Result<StageRecord, String>>> {
    if !path.exists() {
        return Ok(None);
    }
    let v: serde_json::Value = read_json(path)?;
    if v.get("fingerprint").is_none() {
        return Ok(Some(Err(
            "made by an earlier slimseg that recorded no fingerprint".into(),
        )));
    }
    Ok(Some(serde_json::from_value(v).map_err(|e| {
        format!("{}: unexpected record ({e})", path.display())
    })))
}

/// The configuration values a stage reads, by dotted key (leaves of the TOML tables).
fn config_values(run: &Run, d: &StageDef) -> Result<BTreeMap<String, String>> {
    let doc = toml::Value::try_from(&run.cfg).context("the configuration as TOML")?;
    // Paths are identified by content elsewhere; run-time keys decide no training result.
    let mut skip = vec![
        "data.root",
        "train.pretrained",
        "train.import",
        "train.device",
        "train.threads",
        "train.progress",
    ];
    skip.extend(d.reads.iter().filter_map(|k| k.strip_prefix('!')));
    let mut out = BTreeMap::new();
    for &key in d.reads.iter().filter(|k| !k.starts_with('!')) {
        match key {
            "device" => {
                let d = match run.device() {
                    Ok(d) => format!("{d:?}"),
                    Err(e) => format!("unavailable ({e})"),
                };
                out.insert("device".into(), d);
            }
            "threads" => {
                out.insert("threads".into(), tch::get_num_threads().max(1).to_string());
            }
            _ => {
                // A key unset in the configuration (an absent optional) reads as absent.
                let Some(v) = doc_get(&doc, key) else {
                    continue;
                };
                flatten(key, v, &skip, &mut out);
            }
        }
    }
    Ok(out)
}

fn doc_get<'a>(doc: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(doc, |v, part| v.get(part))
}

fn flatten(key: &str, v: &toml::Value, skip: &[&str], out: &mut BTreeMap<String, String>) {
    if skip.contains(&key) {
        return;
    }
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                flatten(&format!("{key}.{k}"), x, skip, out);
            }
        }
        other => {
            out.insert(key.to_string(), other.to_string());
        }
    }
}

/// The fingerprint `d` would be made with now, or why it cannot be made (an upstream
/// stage missing or stale).
fn expected(
    run: &Run,
    d: &StageDef,
    states: &States,
) -> Result<std::result::Result<Fingerprint, Vec<String>>> {
    let mut blocked = Vec::new();
    let mut upstream = BTreeMap::new();
    for u in d.upstream {
        match states.get(u.stage).unwrap_or(&State::Missing) {
            State::Done(rec) => {
                let files = if u.files.is_empty() {
                    rec.outputs.clone()
                } else {
                    u.files
                        .iter()
                        .map(|f| {
                            rec.outputs
                                .get(*f)
                                .map(|h| (f.to_string(), h.clone()))
                                .ok_or_else(|| {
                                    anyhow!(
                                        "{}: the record lists no {f}",
                                        run.stage(u.stage).join(STAGE_RECORD).display()
                                    )
                                })
                        })
                        .collect::<Result<_>>()?
                };
                upstream.insert(u.stage.to_string(), files);
            }
            // A stage that is off is not part of the run: nothing below waits for it.
            State::Off(_) => {}
            State::Missing if u.optional => {}
            State::Missing => blocked.push(format!("{} is missing", u.stage)),
            State::Stale(_, why) => {
                blocked.push(format!("{} is stale ({})", u.stage, why.join("; ")))
            }
        }
    }
    if !blocked.is_empty() {
        return Ok(Err(blocked));
    }
    let mut files = BTreeMap::new();
    for &key in d.files {
        let path = match key {
            "train.pretrained" => &run.cfg.train.pretrained,
            "train.import" => &run.cfg.train.import,
            other => bail!("the graph names an unknown file key {other}"),
        };
        if let Some(p) = path {
            // A file that is gone makes the stage stale (it could not be made again), not
            // the whole graph unreadable.
            let d = if p.is_file() {
                run.file_digest(p)
                    .with_context(|| format!("the checkpoint of {key}"))?
            } else {
                format!("missing: {}", p.display())
            };
            files.insert(key.to_string(), d);
        }
    }
    Ok(Ok(Fingerprint {
        config: config_values(run, d)?,
        upstream,
        data: if d.data {
            Some(run.data_identity()?.clone())
        } else {
            None
        },
        files,
    }))
}

/// The state of `d`, its upstream stages' states given.
pub fn state_of(run: &Run, d: &StageDef, states: &States) -> Result<State> {
    if let Some(why) = d.off_because(&run.cfg) {
        return Ok(State::Off(why));
    }
    let rec = match read_record(&run.stage(d.name).join(STAGE_RECORD))? {
        None => return Ok(State::Missing),
        Some(Err(why)) => return Ok(State::Stale(None, vec![why])),
        Some(Ok(r)) => r,
    };
    Ok(match expected(run, d, states)? {
        Err(blocked) => State::Stale(Some(Box::new(rec)), blocked),
        Ok(now) => {
            let why = rec.fingerprint.differences(&now);
            if why.is_empty() {
                State::Done(Box::new(rec))
            } else {
                State::Stale(Some(Box::new(rec)), why)
            }
        }
    })
}

/// The states of every stage, in pipeline order.
pub fn states(run: &Run) -> Result<States> {
    let mut out = States::new();
    for d in &GRAPH {
        let s = state_of(run, d, &out)?;
        out.insert(d.name, s);
    }
    Ok(out)
}

/// What a stage make has at hand: the run and its cohort, loaded once when needed.
pub struct Ctx<'a> {
    /// The run.
    pub run: &'a Run,
    /// Training stages stop after this many epochs of this call (`--stop-after`).
    pub stop_after: Option<usize>,
    /// Training slices of the stages after this one (`reproduce`), for the whole run's
    /// time estimate.
    pub slices_after: Option<u64>,
    /// Whether the stage being made was forced (`--force`): made again whole, none of its
    /// parts reused.
    pub force: bool,
    cohort: Option<Cohort>,
}

impl<'a> Ctx<'a> {
    /// A context for `run`.
    pub fn new(run: &'a Run) -> Self {
        Ctx {
            run,
            stop_after: None,
            slices_after: None,
            force: false,
            cohort: None,
        }
    }

    /// The cohort, loaded on first use.
    pub fn cohort(&mut self) -> Result<&Cohort> {
        if self.cohort.is_none() {
            self.cohort = Some(self.run.cohort()?);
        }
        Ok(self.cohort.as_ref().expect("loaded above"))
    }
}

/// A stage that stopped before its end on purpose (`--stop-after`); the next call resumes.
#[derive(Debug)]
pub struct Stopped(pub String);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stopped {}

/// Checks that the files a stage consumes are still those its upstream records name.
fn verify_consumed(run: &Run, d: &StageDef, states: &States) -> Result<()> {
    for u in d.upstream.iter().filter(|u| !u.files.is_empty()) {
        let Some(rec) = states.get(u.stage).and_then(State::done) else {
            continue;
        };
        for f in u.files {
            let path = run.stage(u.stage).join(f);
            let now = digest::of_file(&path)?;
            if rec.outputs.get(*f) != Some(&now) {
                bail!(
                    "{} changed since the {} stage was made (its record has another digest); \
                     redo it with `slimseg {} --run {} --force`",
                    path.display(),
                    u.stage,
                    def(u.stage).command,
                    run.root.display()
                );
            }
        }
    }
    Ok(())
}

/// Why `d` cannot be made now (an upstream stage missing or stale), as an error naming
/// the stage and the command that makes it.
fn refuse_blocked(run: &Run, d: &StageDef, states: &States) -> Result<()> {
    for u in d.upstream {
        let ud = def(u.stage);
        match states.get(u.stage).unwrap_or(&State::Missing) {
            State::Missing if !u.optional => bail!(
                "{}: the {} stage is missing; run `slimseg {} --run {}` first",
                run.stage(u.stage).display(),
                u.stage,
                ud.command,
                run.root.display()
            ),
            State::Stale(_, why) => bail!(
                "{}: the {} stage is stale: {}; redo it with `slimseg {} --run {}`, or run \
                 `slimseg reproduce --run {}`",
                run.stage(u.stage).display(),
                u.stage,
                why.join("; "),
                ud.command,
                run.root.display(),
                run.root.display()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// What [`make`] did.
#[derive(Debug)]
pub enum Made {
    /// The stage was made; its wall seconds.
    Ran(f64),
    /// It stopped before its end as asked; the message.
    Stopped(String),
}

/// Makes stage `name` of the run: refuses when an upstream stage is missing or stale,
/// or when the stage is done and `force` is false; otherwise builds it (in a staging
/// folder when a complete stage is there) and records it.
pub fn make(ctx: &mut Ctx<'_>, name: &str, force: bool) -> Result<Made> {
    let run = ctx.run;
    let d = def(name);
    let states = states(run)?;
    let state = states.get(d.name).expect("every stage evaluated").clone();
    if let State::Off(why) = &state {
        bail!("the {name} stage is not part of this run: {why}");
    }
    if let State::Done(rec) = &state {
        if !force {
            bail!(
                "{} is complete ({}, fingerprint {}); pass --force to redo it",
                run.stage(name).display(),
                run.stage(name).join(STAGE_RECORD).display(),
                rec.id
            );
        }
    }
    refuse_blocked(run, d, &states)?;
    let fingerprint = match expected(run, d, &states)? {
        Ok(f) => f,
        Err(why) => bail!(
            "{}: cannot be made: {}",
            run.stage(name).display(),
            why.join("; ")
        ),
    };
    verify_consumed(run, d, &states)?;
    // A device that is not there fails here, before any folder is touched.
    run.device()?;
    if ctx.stop_after.is_some() && !matches!(state, State::Missing) {
        bail!(
            "{}: --stop-after stops a stage that is built in place; this stage is complete, \
             so its redo is built beside it and could not be resumed; redo it without \
             --stop-after",
            run.stage(name).display()
        );
    }
    let t = Instant::now();
    let target = run.stage(name);
    // A complete stage (done or stale) stays in place until its redo has succeeded.
    let staging = match &state {
        State::Missing | State::Off(_) => None,
        State::Done(_) => {
            eprintln!("[{name}] redo (--force), built beside the complete stage");
            Some(())
        }
        State::Stale(_, why) => {
            eprintln!("[{name}] stale, redone: {}", why.join("; "));
            Some(())
        }
    }
    .map(|()| slimseg_data::staging_sibling(&target));
    let dir = staging.clone().unwrap_or_else(|| target.clone());
    if staging.is_none() {
        prepare_in_place(&dir, &fingerprint, force, d.own_records)?;
    } else {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_json(&dir.join(INPUTS_FILE), &fingerprint)?;
    ctx.force = force;
    let result = (d.make)(ctx, &dir);
    ctx.force = false;
    if let Err(e) = result {
        if let Some(s) = &staging {
            let _ = std::fs::remove_dir_all(s);
        }
        if let Some(stop) = e.downcast_ref::<Stopped>() {
            // The next call resumes only from the inputs this one started with.
            run.save_config()?;
            return Ok(Made::Stopped(stop.0.clone()));
        }
        return Err(e);
    }
    if let Some(f) = d.produces.iter().find(|f| !dir.join(f).is_file()) {
        if let Some(s) = &staging {
            let _ = std::fs::remove_dir_all(s);
        }
        bail!("{}: the {name} stage did not produce {f}", dir.display());
    }
    // One pass over the folder's files: it finds the copies and gives the record's digests.
    let all = digest::of_tree(&dir, &[])?;
    let (linked, saved) = digest::link_duplicates(&dir, &all)?;
    if linked > 0 {
        eprintln!(
            "[{name}] {linked} file(s) identical to another stored once ({:.1} MB saved)",
            saved as f64 / 1e6
        );
    }
    let seconds = t.elapsed().as_secs_f64();
    let rec = StageRecord {
        stage: name.into(),
        id: fingerprint.id(),
        outputs: digest::without(all, &["checkpoints", STAGE_RECORD, INPUTS_FILE]),
        fingerprint,
        seconds,
        finished_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        made_by: Provenance::now(run.device()?),
    };
    write_json(&dir.join(STAGE_RECORD), &rec)?;
    // The configuration first: interrupted between the two, the stage looks stale (and is
    // redone), never done from another configuration.
    run.save_config()?;
    if let Some(s) = &staging {
        swap_in(s, &target)?;
    }
    Ok(Made::Ran(seconds))
}

/// Clears an interrupted in-place stage made from other inputs, or any with `restart`,
/// so it restarts; one made from the same inputs is kept, and its training resumes.
fn prepare_in_place(
    dir: &Path,
    fingerprint: &Fingerprint,
    restart: bool,
    own_records: &[&str],
) -> Result<()> {
    if !dir.exists() {
        return std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()));
    }
    let inputs = dir.join(INPUTS_FILE);
    let why = if restart {
        vec!["--force".to_string()]
    } else if inputs.exists() {
        let before: Fingerprint = read_json(&inputs)?;
        before.differences(fingerprint)
    } else if std::fs::read_dir(dir)?.next().is_some() {
        vec!["its inputs are unknown".to_string()]
    } else {
        Vec::new()
    };
    if !why.is_empty() {
        eprintln!(
            "  {}: restarting the interrupted stage ({})",
            dir.display(),
            why.join("; ")
        );
        let keep = |name: &str| !restart && own_records.iter().any(|p| name.starts_with(p));
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let e = e?;
            let path = e.path();
            if keep(&e.file_name().to_string_lossy()) {
                eprintln!("  keeping {} (it has its own record)", path.display());
            } else if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot clear {}", path.display()))?;
            } else {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot clear {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Puts the finished staging folder at `target`: an atomic exchange when a previous
/// stage is there (which is then removed; a failed removal leaves it to the next
/// writer's leftover cleanup), else a rename. Where the filesystem cannot exchange, the
/// previous stage is first moved aside to `.NAME.previous-PID`, which the leftover
/// cleanup never removes, so an interruption between the two renames loses nothing.
pub fn swap_in(staging: &Path, target: &Path) -> Result<()> {
    if !target.exists() {
        return std::fs::rename(staging, target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                staging.display(),
                target.display()
            )
        });
    }
    match exchange(staging, target) {
        Ok(()) => {
            if let Err(e) = std::fs::remove_dir_all(staging) {
                eprintln!(
                    "  warning: cannot remove the previous stage {} ({e}); the next writing \
                     command removes it",
                    staging.display()
                );
            }
            Ok(())
        }
        Err(e) if exchange_unsupported(&e) => {
            let aside = target.with_file_name(format!(
                ".{}.previous-{}",
                target.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            std::fs::rename(target, &aside)
                .with_context(|| format!("cannot move {} aside", target.display()))?;
            std::fs::rename(staging, target).with_context(|| {
                format!(
                    "cannot rename {} to {} (the previous stage is in {})",
                    staging.display(),
                    target.display(),
                    aside.display()
                )
            })?;
            std::fs::remove_dir_all(&aside)
                .with_context(|| format!("cannot remove the previous stage {}", aside.display()))
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot exchange {} with {}",
                staging.display(),
                target.display()
            )
        }),
    }
}

/// Whether an exchange failed because the filesystem or kernel cannot do it.
fn exchange_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// Exchanges two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// No atomic exchange outside Linux: the caller moves the previous stage aside.
#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controls_are_off_without_the_pixel_module_or_when_switched_off() {
        let mut cfg = RunConfig::with_model(
            slimseg_model::ModelConfig::tiny().with_pixel_head(PixelHead::DirectionField),
        );
        let off = |cfg: &RunConfig, name: &str| def(name).off_because(cfg);
        assert_eq!(off(&cfg, "transunet"), None);
        assert_eq!(off(&cfg, "uniform"), None);
        cfg.controls.uniform = false;
        assert_eq!(
            off(&cfg, "uniform").as_deref(),
            Some("controls.uniform = false")
        );
        cfg.controls.transunet = false;
        assert_eq!(
            off(&cfg, "transunet").as_deref(),
            Some("controls.transunet = false")
        );
        cfg.controls.transunet = true;
        cfg.model.pixel_head = PixelHead::None;
        assert!(
            off(&cfg, "transunet")
                .unwrap()
                .contains("the baseline is TransUNet itself")
        );
        assert!(
            GRAPH
                .iter()
                .filter(|d| !["transunet", "uniform", "sweep", "profile"].contains(&d.name))
                .all(|d| d.off_because(&cfg).is_none())
        );
        // The sweep is on exactly when it has budgets.
        assert!(off(&cfg, "sweep").unwrap().contains("sweep.keep is empty"));
        cfg.sweep.keep = vec![0.8];
        assert!(off(&cfg, "sweep").is_none());
        // The profile exactly with a latency budget.
        assert!(
            off(&cfg, "profile")
                .unwrap()
                .contains("does not limit latency")
        );
        cfg.select.budget = slimseg_search::Budget::Model {
            metric: slimseg_search::CostMetric::Latency,
            keep: 0.7,
            scope: slimseg_search::CostScope::Model,
        };
        assert!(off(&cfg, "profile").is_none());
    }

    #[test]
    fn every_upstream_comes_earlier_and_names_are_unique() {
        for (i, d) in GRAPH.iter().enumerate() {
            for u in d.upstream {
                let j = GRAPH.iter().position(|x| x.name == u.stage);
                assert!(j.is_some_and(|j| j < i), "{} <- {}", d.name, u.stage);
            }
            assert_eq!(GRAPH.iter().filter(|x| x.name == d.name).count(), 1);
        }
    }

    #[test]
    fn differences_name_keys_upstream_files_and_data() {
        let mut a = Fingerprint::default();
        a.config.insert("train.epochs".into(), "4".into());
        a.upstream.insert(
            "compressed".into(),
            [("weights.safetensors".to_string(), "aa".to_string())].into(),
        );
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.config.insert("train.epochs".into(), "6".into());
        b.upstream
            .get_mut("compressed")
            .unwrap()
            .insert("weights.safetensors".into(), "bb".into());
        let why = a.differences(&b);
        assert_eq!(
            why,
            [
                "train.epochs: 4 -> 6",
                "compressed changed (weights.safetensors)"
            ]
        );
        assert_ne!(a.id(), b.id());
    }
}
