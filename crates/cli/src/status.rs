//! `status`: the stage graph of a run, each stage done, stale (with why) or missing, with
//! its fingerprint, completion time, wall time and who made it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::graph::{GRAPH, STAGE_RECORD, State, states};
use crate::run::{DataArgs, Open, Run, RunArgs};

/// Options of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The run directory.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC` (the civil-from-days conversion of the
/// proleptic Gregorian calendar).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60
    )
}

/// `status --run R`.
pub fn cmd(args: StatusArgs) -> Result<()> {
    let run = Run::open(
        &RunArgs::dir(&args.run),
        Open {
            data: Some(&args.data),
            ..Open::read()
        },
    )?;
    println!("run {}", run.root.display());
    match &run.cfg.data.root {
        Some(root) => {
            let kind = if run.synthetic() {
                "synthetic cohort"
            } else {
                "ACDC tree"
            };
            match run.data_identity() {
                Ok(id) => println!("data: {kind} at {}: {}", root.display(), id.short()),
                Err(e) => println!("data: {kind} at {}: unreadable ({e:#})", root.display()),
            }
        }
        None => println!("data: none yet"),
    }
    let states = states(&run)?;
    println!(
        "\n{:<11} {:<8} {:<13} {:<21} {:>8}  made by",
        "stage", "state", "fingerprint", "finished", "seconds"
    );
    let mut total = 0.0;
    for d in &GRAPH {
        let state = &states[d.name];
        let off;
        let (word, why) = match state {
            State::Off(reason) => {
                off = [reason.clone()];
                ("off", &off[..])
            }
            State::Missing if run.stage(d.name).exists() => ("partial", &[][..]),
            State::Missing => ("missing", &[][..]),
            State::Done(_) => ("done", &[][..]),
            State::Stale(_, why) => ("stale", why.as_slice()),
        };
        match state.record() {
            Some(r) => {
                total += r.seconds;
                println!(
                    "{:<11} {:<8} {:<13} {:<21} {:>8.1}  slimseg {} ({}), {}",
                    d.name,
                    word,
                    r.id,
                    utc(r.finished_unix),
                    r.seconds,
                    r.made_by.slimseg,
                    short_commit(&r.made_by.commit),
                    r.made_by.device
                );
            }
            None => {
                let hint = if matches!(state, State::Off(_))
                    || run.stage(d.name).join(STAGE_RECORD).exists()
                {
                    String::new()
                } else {
                    format!("`slimseg {}` makes it: {}", d.command, d.about)
                };
                println!(
                    "{:<11} {:<8} {:<13} {:<21} {:>8}  {hint}",
                    d.name, word, "-", "-", "-"
                );
            }
        }
        for w in why {
            println!("{:<11}   why: {w}", "");
        }
    }
    println!("\ntotal wall time of the recorded stages: {total:.1} s");
    Ok(())
}

/// The first 10 characters of a commit hash.
pub fn short_commit(c: &str) -> &str {
    &c[..c.len().min(10)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_format_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_125_500), "2026-12-01 11:45 UTC");
    }
}
