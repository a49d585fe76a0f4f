//! `memaudit demo`: the one command that shows what memaudit does, on the embedded corpus (Moby
//! Dick) with no fetch. It runs The Secret Sharer (Carlini et al., USENIX Security 2019) twice:
//! canaries `my pin is {digits:4}` inserted 1, 4, 16 and 64 times into the training text, a plain
//! character LSTM and a private one (DP-SGD with Poisson sampling, epsilon 8 by default); it
//! samples text from the plain model, measures every canary's exact exposure (|R| = 10^4, so the
//! trie walk ranks all of R) and tries to extract each by best-first search, with never-inserted
//! canaries as the chance baseline (1/ln 2 = 1.44 bits). One report: `<out>/report.html`.
//!
//! Both runs are ordinary `secret-sharer` runs (folders `plain/` and `private/`); the report
//! prints the equivalent commands. `--quick` is a seconds-long smoke run of the same steps.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::secret_sharer::{self as ss, CHANCE_EXPOSURE, Outcome, RepSummary};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num, opt_num};
use crate::report;

/// Marker file that says a folder is the demo's own (and may be replaced by the next demo).
const MARKER: &str = "demo.json";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The demo's folder. A folder from a previous demo is replaced; any other non-empty folder is
    /// refused.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    pub out: PathBuf,
    /// A tiny run (seconds): the same steps on a few hundred windows and a small model.
    #[arg(long)]
    pub quick: bool,
    /// Epsilon of the private model (delta 1e-5, Poisson sampling, RDP accounting).
    #[arg(long, default_value_t = 8.0, value_name = "EPS")]
    pub epsilon: f64,
    /// Epochs of each model (default 8; 1 with --quick).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Seed of everything (canaries, initialisation, batches, samples).
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
}

/// Parses a `secret-sharer` command line with clap, so the demo's runs are exactly the command
/// the report prints.
#[derive(clap::Parser, Debug)]
#[command(name = "memaudit secret-sharer")]
struct SecretSharerCli {
    #[command(flatten)]
    args: ss::Args,
}

/// The two runs' flags (everything but --out).
fn run_flags(a: &Args) -> (Vec<String>, Vec<String>) {
    let epochs = a.epochs.unwrap_or(if a.quick { 1 } else { 8 }).to_string();
    let seed = a.seed.to_string();
    let mut common: Vec<String> = [
        "--corpus",
        "embedded",
        "--level",
        "char",
        "--canary",
        "my pin is {digits:4}",
        "--model",
        "lstm",
        "--rnn-layers",
        "1",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--seq-len",
        "64",
        "--epochs",
        &epochs,
        "--seed",
        &seed,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let quick: &[&str] = &[
        "--max-train",
        "400",
        "--rnn-hidden",
        "48",
        "--canaries",
        "2",
        "--repetitions",
        "1,16",
        "--held-out",
        "20",
    ];
    let full: &[&str] = &[
        "--rnn-hidden",
        "128",
        "--canaries",
        "3",
        "--repetitions",
        "1,4,16,64",
        "--held-out",
        "50",
    ];
    common.extend(
        (if a.quick { quick } else { full })
            .iter()
            .map(|s| s.to_string()),
    );
    let mut plain = common.clone();
    plain.extend(["--batch-size", "32"].map(String::from));
    let mut private = common;
    // DP-SGD wants larger batches (the noise is divided by the batch size).
    let eps = a.epsilon.to_string();
    private.extend(
        [
            "--batch-size",
            if a.quick { "64" } else { "128" },
            "--target-epsilon",
            &eps,
            "--clip",
            "1",
            "--sampling",
            "poisson",
        ]
        .map(String::from),
    );
    (plain, private)
}

/// Make `out` the demo's folder: create it, or empty it when a previous demo left it; refuse a
/// folder that holds anything else (nothing in it is touched).
fn claim_folder(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(user(format!(
            "--out {}: exists and is not a folder; choose another --out",
            out.display()
        )));
    }
    if out.is_dir() {
        let nonempty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some();
        if nonempty {
            let marker: Option<Value> = std::fs::read(out.join(MARKER))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let ours = marker
                .as_ref()
                .and_then(|m| m.get("command"))
                .and_then(Value::as_str)
                == Some("demo");
            if !ours {
                return Err(user(format!(
                    "--out {}: holds something other than a memaudit demo; choose another --out (the demo only replaces its own folder)",
                    out.display()
                )));
            }
            std::fs::remove_dir_all(out).with_context(|| {
                format!("cannot replace the previous demo in {}", out.display())
            })?;
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(crate::rundir::write_atomic(
        &out.join(MARKER),
        serde_json::to_string_pretty(&json!({"command": "demo", "status": "running"}))?.as_bytes(),
    )?)
}

fn run_one(argv: &[String], out: &Path, ctx: &Ctx, title: &str) -> Result<Outcome> {
    let mut full = vec!["secret-sharer".to_string()];
    full.extend(argv.iter().cloned());
    full.extend(["--out".to_string(), out.display().to_string()]);
    let cli = SecretSharerCli::try_parse_from(&full)
        .map_err(|e| anyhow::anyhow!("internal: demo flags do not parse: {e}"))?;
    let a = &cli.args;
    ss::run_config(&a.settings(), &a.config, ctx, title, true)
}

/// The command a user would type for one of the runs.
fn command_line(argv: &[String], out: &Path) -> String {
    let quoted: Vec<String> = argv
        .iter()
        .map(|s| {
            if s.contains(' ') || s.contains('{') {
                format!("'{s}'")
            } else {
                s.clone()
            }
        })
        .collect();
    format!(
        "memaudit secret-sharer {} --out {}",
        quoted.join(" "),
        out.display()
    )
}

/// One repetition count: (repetitions, canaries, plain exposure, private exposure, plain
/// extracted, private extracted).
type Row = (u32, usize, f64, f64, Option<usize>, Option<usize>);

fn exposure_of(s: &RepSummary) -> f64 {
    s.exposure_mean.unwrap_or(s.interpolated_mean)
}

fn rep_label(r: u32) -> String {
    if r == 0 {
        "0 (never inserted)".to_string()
    } else {
        r.to_string()
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if !(args.epsilon > 0.0 && args.epsilon.is_finite()) {
        return Err(user(format!(
            "--epsilon must be positive and finite, got {}",
            args.epsilon
        )));
    }
    if args.epochs == Some(0) {
        return Err(user("--epochs must be at least 1"));
    }
    let started = std::time::Instant::now();
    claim_folder(&args.out)?;
    let (plain_flags, private_flags) = run_flags(args);
    let plain_dir = args.out.join("plain");
    let private_dir = args.out.join("private");

    ctx.note("== 1/2: plain LSTM language model with canaries");
    let plain = run_one(&plain_flags, &plain_dir, ctx, "memaudit demo: plain model")?;
    ctx.note(format!(
        "== 2/2: private model (DP-SGD, epsilon {})",
        args.epsilon
    ));
    let private = run_one(
        &private_flags,
        &private_dir,
        ctx,
        "memaudit demo: private model",
    )?;

    // Text from the plain model: a free sample, then what it says after "my pin is ".
    let lm = plain.config.model.incremental_lm(&plain.params)?;
    let dp_lm = private.config.model.incremental_lm(&private.params)?;
    let mut rng = ChaCha8Rng::seed_from_u64(ss::derive_seed(args.seed, 10));
    let sample = super::sample::sample_text(
        lm.as_ref(),
        &plain.tokenizer,
        "",
        if args.quick { 120 } else { 400 },
        0.8,
        &mut rng,
    )?;
    let greedy = |m: &dyn memaudit_engine::IncrementalLm, tok| -> Result<String> {
        let mut r = ChaCha8Rng::seed_from_u64(0);
        super::sample::sample_text(m, tok, "my pin is ", 4, 0.0, &mut r)
    };
    let plain_pin = greedy(lm.as_ref(), &plain.tokenizer)?;
    let private_pin = greedy(dp_lm.as_ref(), &private.tokenizer)?;
    let inserted_texts: Vec<&str> = plain
        .set
        .manifest
        .canaries
        .iter()
        .filter(|c| c.repetitions > 0)
        .map(|c| c.text.as_str())
        .collect();
    let is_canary = |t: &str| inserted_texts.contains(&t.trim_end());

    // Plain vs private, per repetition count.
    let ps = plain.audit.summary(&plain.set);
    let qs = private.audit.summary(&private.set);
    let rows: Vec<Row> = ps
        .iter()
        .zip(&qs)
        .map(|(p, q)| {
            (
                p.repetitions,
                p.canaries,
                exposure_of(p),
                exposure_of(q),
                p.extracted,
                q.extracted,
            )
        })
        .collect();
    let log2r = plain.set.tpl.space().log2_size();
    let eps = private.epsilon;
    let frac = |k: Option<usize>, n: usize| k.map_or("-".to_string(), |k| format!("{k}/{n}"));
    let mut table = format!(
        "exposure of \"my pin is {{digits:4}}\" canaries (exact, mean bits; max {log2r:.1}; chance {CHANCE_EXPOSURE:.2}) and extraction (canary among the 10 most likely of the 10^4 PINs):\n\
         repetitions          canaries  plain exposure  private exposure  plain extracted  private extracted\n"
    );
    for (r, n, pe, qe, px, qx) in &rows {
        table += &format!(
            "{:<20} {:>8} {:>15.2} {:>17.2} {:>16} {:>18}\n",
            rep_label(*r),
            n,
            pe,
            qe,
            frac(*px, *n),
            frac(*qx, *n)
        );
    }
    let eps_text = eps.map_or("not accounted".to_string(), |e| format!("{e:.2}"));
    let loss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let seconds = started.elapsed().as_secs_f64();
    // DP-SGD's guarantee is per training example; a canary inserted r times is r examples, and
    // group privacy only bounds it at r x epsilon.
    let group_note = format!(
        "DP protects each training window at epsilon {eps_text}; a canary inserted r times is r windows, covered only at about r x epsilon (group privacy), so frequently repeated canaries can still show."
    );
    let headline = format!(
        "plain model: valid loss {} nats/char; private model: valid loss {} nats/char, epsilon {} (delta 1e-5, Poisson sampling)\n\
         greedy completion of \"my pin is \": plain {:?}{}, private {:?}{}",
        loss(plain.valid_loss),
        loss(private.valid_loss),
        eps_text,
        plain_pin,
        if is_canary(&plain_pin) {
            " (an inserted canary)"
        } else {
            ""
        },
        private_pin,
        if is_canary(&private_pin) {
            " (an inserted canary)"
        } else {
            ""
        },
    );

    // The one report.
    let mut html = report::Report::new("memaudit demo: what a language model remembers");
    html.para(&format!(
        "Two character LSTM language models trained on the embedded corpus (Moby Dick, chapters 1-42) into which canaries \"my pin is NNNN\" were inserted 1 to {} times (The Secret Sharer, Carlini et al. 2019). The first is trained plainly; the second with DP-SGD at epsilon {} (delta 1e-5). Exposure = log2|R| - log2 rank of the canary among all 10^4 PINs (exact, by the trie walk); canaries that were never inserted show what chance looks like (1/ln 2 = 1.44 bits on average). Total time {:.0} s.",
        plain.set.repetition_counts().last().copied().unwrap_or(0),
        args.epsilon,
        seconds
    ));
    html.heading("Plain vs private");
    html.table(
        &[
            "repetitions",
            "canaries",
            "plain exposure (bits)",
            "private exposure (bits)",
            "plain: extracted",
            "private: extracted",
        ],
        &rows
            .iter()
            .map(|(r, n, pe, qe, px, qx)| {
                vec![
                    rep_label(*r),
                    n.to_string(),
                    format!("{pe:.2}"),
                    format!("{qe:.2}"),
                    frac(*px, *n),
                    frac(*qx, *n),
                ]
            })
            .collect::<Vec<_>>(),
    );
    html.pre(&headline);
    html.para(&group_note);
    html.heading("Text sampled from the plain model (temperature 0.8)");
    html.pre(&sample);
    html.heading("Commands of the two runs");
    html.pre(&format!(
        "{}\n\n{}",
        command_line(&plain_flags, &plain_dir),
        command_line(&private_flags, &private_dir)
    ));
    for (label, o) in [("plain model: ", &plain), ("private model: ", &private)] {
        html.heading(&format!("{label}training"));
        super::train::epoch_plots(&mut html, &o.epochs);
        ss::report_sections(
            &mut html,
            label,
            &o.set,
            &o.audit,
            &o.log,
            o.steps_per_epoch,
        );
    }
    if let Some(s) = &private.statement {
        html.heading("private model: privacy statement");
        html.pre(s);
    }
    let report_path = args.out.join("report.html");
    html.write(&report_path)?;
    let json = json!({
        "report": report_path.display().to_string(),
        "seconds": num(seconds),
        "epsilon": eps.map(num),
        "log2_space": log2r,
        "chance_exposure": CHANCE_EXPOSURE,
        "by_repetitions": rows.iter().map(|(r, n, pe, qe, px, qx)| json!({
            "repetitions": r,
            "canaries": n,
            "plain_exposure": num(*pe),
            "private_exposure": num(*qe),
            "plain_extracted": px,
            "private_extracted": qx,
        })).collect::<Vec<_>>(),
        "sample": sample,
        "completion_plain": plain_pin,
        "completion_private": private_pin,
        "plain": plain.report.json,
        "private": private.report.json,
        "valid_loss_plain": opt_num(plain.valid_loss),
        "valid_loss_private": opt_num(private.valid_loss),
    });
    crate::rundir::write_atomic(
        &args.out.join(MARKER),
        serde_json::to_string_pretty(
            &json!({"command": "demo", "status": "completed", "results": json}),
        )?
        .as_bytes(),
    )?;
    let text = format!(
        "sample from the plain model:\n{}\n\n{table}{headline}\n{group_note}\n\nreport: {} ({seconds:.0} s)",
        sample.trim_end(),
        report_path.display()
    );
    Ok(Report::new(text, json))
}
