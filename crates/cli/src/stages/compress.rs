//! `compress`: the subnet of the budget (`[select]`, or `--target-macs`,
//! `--target-params`, `--budget`), chosen from the search's final gates, sliced from the
//! searched weights into a physically smaller model in `RUN/compressed`. A budget given
//! on the command line becomes the run's `[select]` once the stage is made, so the
//! stages below it are made from the same subnet.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use slimseg_compress::{Folding, check_equivalence, compress_checkpoint};
use slimseg_data::pipeline::resize_cubic;
use slimseg_search::data::EvalVolume;
use slimseg_search::engine::read_gate_values;
use slimseg_search::select::{Budget, CostMetric, CostScope, SelectConfig};
use slimseg_search::stages::SUBNET_FILE;
use tch::{Device, Kind, Tensor};

use super::{EVAL_FILE, ModelStage, StageArgs, eval_test, load_stage_model, make_one};
use crate::graph::Ctx;
use crate::run::write_json;

/// Options of `compress`.
#[derive(Debug, Clone, Args)]
pub struct CompressArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// `compress`.
pub fn cmd(a: CompressArgs) -> Result<()> {
    let mut run = a.stage.open()?;
    if let Some(sel) = budget_override(&a.budget, &run.cfg.select)? {
        run.cfg.select = sel;
    }
    // A latency budget selects by the profile: measured first when missing or stale.
    if super::profile::off(&run.cfg).is_none()
        && !matches!(
            crate::graph::states(&run)?["profile"],
            crate::graph::State::Done(_)
        )
    {
        make_one(&run, "profile", false, None)?;
    }
    make_one(&run, "compressed", a.stage.force, None)
}

/// The subnet budget on the command line (overrides `[select]` of the configuration).
#[derive(Debug, Clone, Default, Args)]
pub struct BudgetArgs {
    /// Keep at most this share of the MACs: a fraction (0.7) or a percentage (70%).
    #[arg(long, value_name = "KEEP")]
    pub target_macs: Option<String>,
    /// Keep at most this share of the parameters: a fraction or a percentage. With
    /// `--target-macs` too, both limits hold (a joint budget).
    #[arg(long, value_name = "KEEP")]
    pub target_params: Option<String>,
    /// Keep at most this share of the latency, as the run's latency table predicts it
    /// (the profile stage measures it first when it is missing or stale). Alone: not
    /// with the other budget flags.
    #[arg(long, value_name = "KEEP")]
    pub target_latency: Option<String>,
    /// Per-dimension budgets (ViT-Slim): kept fractions, e.g. `attn=0.6,mlp=0.5,patch=0.8`.
    #[arg(long, value_name = "attn=..,mlp=..,patch=..")]
    pub budget: Option<String>,
    /// What `--target-macs` / `--target-params` measure: the whole model or the
    /// transformer blocks. Default: the configuration's scope, else the whole model.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
}

/// Cost scope on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// The whole network.
    Model,
    /// The transformer blocks only.
    Transformer,
}

/// Parses a kept share: `0.7` or `70%`.
pub fn parse_share(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map(|v| v / 100.0)
    } else {
        t.parse::<f64>()
    }
    .map_err(|_| anyhow!("`{s}` is not a share (expected e.g. 0.7 or 70%)"))?;
    if !(v > 0.0 && v <= 1.0) {
        bail!("`{s}`: the kept share must be in (0, 1]");
    }
    Ok(v)
}

/// Parses `attn=0.6,mlp=0.5,patch=0.8` (`token` is accepted for `patch`).
pub fn parse_dimension_budget(s: &str) -> Result<Budget> {
    let (mut attn, mut mlp, mut token) = (None, None, None);
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--budget {s}: `{part}` is not NAME=FRACTION"))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| anyhow!("--budget {s}: `{v}` is not a number"))?;
        if !(0.0..=1.0).contains(&v) {
            bail!("--budget {s}: `{k}` must be in [0, 1], found {v}");
        }
        match k.trim() {
            "attn" => attn = Some(v),
            "mlp" => mlp = Some(v),
            "patch" | "token" => token = Some(v),
            other => bail!("--budget {s}: unknown dimension `{other}` (attn, mlp, patch)"),
        }
    }
    Ok(Budget::PerDimension {
        attn: attn.ok_or_else(|| anyhow!("--budget {s}: attn=.. is missing"))?,
        mlp: mlp.ok_or_else(|| anyhow!("--budget {s}: mlp=.. is missing"))?,
        token: token.ok_or_else(|| anyhow!("--budget {s}: patch=.. is missing"))?,
    })
}

/// The selection the command line asks for, if any.
pub fn budget_override(b: &BudgetArgs, cfg: &SelectConfig) -> Result<Option<SelectConfig>> {
    let kinds = [
        b.budget.is_some(),
        b.target_macs.is_some() || b.target_params.is_some(),
        b.target_latency.is_some(),
    ];
    if kinds.iter().filter(|&&k| k).count() > 1 {
        bail!(
            "give one kind of budget: --budget, --target-macs and/or --target-params, or \
             --target-latency"
        );
    }
    let scope = match (b.scope, cfg.budget) {
        (Some(ScopeArg::Model), _) => CostScope::Model,
        (Some(ScopeArg::Transformer), _) => CostScope::Transformer,
        (None, Budget::Model { scope, .. } | Budget::Joint { scope, .. }) => scope,
        (None, _) => CostScope::Model,
    };
    let macs = b
        .target_macs
        .as_deref()
        .map(|s| parse_share(s).context("--target-macs"))
        .transpose()?;
    let params = b
        .target_params
        .as_deref()
        .map(|s| parse_share(s).context("--target-params"))
        .transpose()?;
    if let Some(s) = &b.target_latency {
        let keep = parse_share(s).context("--target-latency")?;
        let budget = Budget::Model {
            metric: CostMetric::Latency,
            keep,
            scope,
        };
        return Ok(Some(SelectConfig { budget, ..*cfg }));
    }
    let budget = match (params, macs, &b.budget) {
        (Some(params), Some(macs), _) => Budget::Joint {
            params,
            macs,
            scope,
        },
        (None, Some(keep), _) => Budget::Model {
            metric: CostMetric::Macs,
            keep,
            scope,
        },
        (Some(keep), None, _) => Budget::Model {
            metric: CostMetric::Params,
            keep,
            scope,
        },
        (None, None, Some(s)) => parse_dimension_budget(s)?,
        (None, None, None) => return Ok(None),
    };
    Ok(Some(SelectConfig { budget, ..*cfg }))
}

/// What `compressed/compress.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompressRecord {
    /// Budget used.
    pub budget: Budget,
    /// Parameters and MACs of the compressed and the full model.
    pub summary: slimseg_compress::Summary,
    /// Search-health warnings about the gates and the subnet chosen from them.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Selects the subnet of `[select]` from the search's final gates, slices the searched
/// weights into `dir`, checks the slices against the masked searched model and
/// evaluates them on the test set.
pub fn make(ctx: &mut Ctx<'_>, dir: &Path) -> Result<()> {
    let run = ctx.run;
    let search = run.stage("search");
    let weights = search.join("weights.safetensors");
    let gates_path = search.join("gates_end.json");
    let gates = read_gate_values(&gates_path)
        .with_context(|| format!("cannot read the gates {}", gates_path.display()))?;
    let table = super::profile::table(run)?;
    let spec = slimseg_search::select_with(&run.cfg.model, &gates, &run.cfg.select, table.as_ref())
        .with_context(|| format!("selecting from {}", gates_path.display()))?;
    eprintln!(
        "[compress] slicing {} into {}",
        weights.display(),
        dir.display()
    );
    let device = run.device()?;
    let cm = compress_checkpoint(
        &run.cfg.model,
        &weights,
        &spec.arch,
        Folding::SoftGates,
        device,
    )
    .with_context(|| format!("cannot compress {}", weights.display()))?;
    spec.save_toml(dir.join(SUBNET_FILE))?;
    let manifest = cm.save(dir)?;

    // Equivalence: the searched model under hard masks (scaled by its gates) vs the slices.
    let mut searched = load_stage_model(run, ModelStage::Search, device)?;
    let cohort = ctx.cohort()?;
    let s = run.cfg.model.img_size as i64;
    tch::manual_seed(7);
    let inputs = match cohort.test.first() {
        Some(v) => volume_batch(v, run.cfg.model.img_size, 4, device),
        None => Tensor::randn([2, 1, s, s], (Kind::Float, device)),
    };
    let eq = check_equivalence(&mut searched.model, &cm.model, &inputs, Folding::SoftGates)?;
    let tol = 1e-3 * eq.logits_max_abs.max(1.0);
    eprintln!(
        "  params {} -> {} (-{:.1}%), MACs {} -> {} (-{:.1}%); equivalence max |diff| {:.2e} \
         (pruning changes logits by {:.2e})",
        manifest.summary.full_params,
        manifest.summary.params,
        100.0 * manifest.summary.param_reduction(),
        manifest.summary.full_macs,
        manifest.summary.macs,
        100.0 * manifest.summary.mac_reduction(),
        eq.max_abs_diff,
        eq.pruning_effect
    );
    if !eq.within(tol) {
        eprintln!(
            "  warning: the compressed model differs from the masked searched model by {:.3e} \
             (tolerance {tol:.1e})",
            eq.max_abs_diff
        );
    }
    write_json(&dir.join("equivalence.json"), &eq)?;
    let warnings = slimseg_search::stats::health(&gates, Some(&spec));
    for w in &warnings {
        eprintln!("  warning: {w}");
    }
    write_json(
        &dir.join("compress.json"),
        &CompressRecord {
            budget: spec.budget,
            summary: manifest.summary,
            warnings,
        },
    )?;
    let rep = eval_test(run, &cm.model, &cohort.test)?;
    write_json(&dir.join(EVAL_FILE), &rep)
}

/// A batch `[n, 1, S, S]` of the middle slices of a volume, resized as in training.
fn volume_batch(v: &EvalVolume, size: usize, n: usize, device: Device) -> Tensor {
    let depth = v.image.dim().0;
    let n = n.min(depth).max(1);
    let start = (depth - n) / 2;
    let mut data = Vec::with_capacity(n * size * size);
    for k in start..start + n {
        let r = resize_cubic(v.image.index_axis(ndarray::Axis(0), k), size, size);
        data.extend(r.iter().copied());
    }
    Tensor::from_slice(&data)
        .view([n as i64, 1, size as i64, size as i64])
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_as_fractions_or_percentages() {
        assert_eq!(parse_share("0.7").unwrap(), 0.7);
        assert!((parse_share("70%").unwrap() - 0.7).abs() < 1e-12);
        assert!(parse_share("0").is_err());
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("x").is_err());
    }

    #[test]
    fn dimension_budget_needs_all_three_dimensions() {
        match parse_dimension_budget("attn=0.5,mlp=0.25,patch=0.75").unwrap() {
            Budget::PerDimension { attn, mlp, token } => {
                assert_eq!((attn, mlp, token), (0.5, 0.25, 0.75))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_dimension_budget("attn=0.5,mlp=0.5").is_err());
        assert!(parse_dimension_budget("attn=0.5,mlp=0.5,heads=0.5").is_err());
        assert!(parse_dimension_budget("attn=2,mlp=0.5,patch=0.5").is_err());
    }

    #[test]
    fn one_budget_flag_at_a_time_and_scope_from_config() {
        let cfg = SelectConfig {
            budget: Budget::Model {
                metric: CostMetric::Macs,
                keep: 0.7,
                scope: CostScope::Transformer,
            },
            ..Default::default()
        };
        let b = BudgetArgs {
            target_macs: Some("60%".into()),
            ..Default::default()
        };
        match budget_override(&b, &cfg).unwrap().unwrap().budget {
            Budget::Model {
                metric,
                keep,
                scope,
            } => {
                assert_eq!(metric, CostMetric::Macs);
                assert!((keep - 0.6).abs() < 1e-12);
                assert_eq!(scope, CostScope::Transformer);
            }
            other => panic!("unexpected {other:?}"),
        }
        let both = BudgetArgs {
            target_macs: Some("0.6".into()),
            target_params: Some("70%".into()),
            ..Default::default()
        };
        match budget_override(&both, &cfg).unwrap().unwrap().budget {
            Budget::Joint {
                params,
                macs,
                scope,
            } => {
                assert!((params - 0.7).abs() < 1e-12 && (macs - 0.6).abs() < 1e-12);
                assert_eq!(scope, CostScope::Transformer);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mixed = BudgetArgs {
            target_macs: Some("0.6".into()),
            budget: Some("attn=0.5,mlp=0.5,patch=0.5".into()),
            ..Default::default()
        };
        assert!(budget_override(&mixed, &cfg).is_err());
        assert!(
            budget_override(&BudgetArgs::default(), &cfg)
                .unwrap()
                .is_none()
        );
    }
}
