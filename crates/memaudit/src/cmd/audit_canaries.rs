//! `--audit-canaries M` for `train` and `secret-sharer`: the black-box one-run audit a run
//! carries. The audit itself (inserting the canaries, the manifest, scoring and bounding) is
//! `memaudit_experiments::audit_canaries`; this module renders its result.

use anyhow::Result;
use memaudit_engine::black_box_canaries::AuditCanaries;
use memaudit_engine::train::Trainer;
pub use memaudit_experiments::audit_canaries::{BlackBoxAudit, audit, insert_into, save_manifest};

use super::train::{Prepared, TrainHooks, train_with_report_hooks};
use crate::Ctx;
use crate::output::{Report, fmt_f64};
use crate::rundir::RunDir;

/// The black-box audit in words.
pub fn audit_text(b: &BlackBoxAudit) -> String {
    let (a, private) = (&b.result, b.private);
    let what = match b.canary_kind.as_str() {
        "mislabelled" => "mislabelled-example canaries",
        _ => "random-window canaries",
    };
    let mut t = format!(
        "Black-box audit (one run, Steinke et al. 2023): {} {what} ({} included), delta {} (2*m*delta = {}), AUROC {}; lower bounds on epsilon, each at significance {}:\n",
        a.m,
        a.included,
        a.delta,
        fmt_f64(a.two_m_delta),
        fmt_f64(a.auroc),
        a.significance
    );
    for b in &a.bounds {
        t += &format!(
            "  {:<16} {}  ({} of {} guessed IN right){}\n",
            b.method,
            fmt_f64(b.epsilon_lower_bound),
            b.correct_guesses,
            b.guesses,
            if b.assumes_gaussian_tradeoff {
                "  (assumes a Gaussian trade-off curve; not used for the verdict)"
            } else {
                ""
            }
        );
    }
    t += &if !private {
        "not a private run: there is no claimed epsilon; the bound measures how much the model memorised its canaries.".to_string()
    } else if a.claimed_epsilon.is_infinite() {
        "claimed epsilon: inf (clipping without noise): any bound is consistent with it."
            .to_string()
    } else if a.exceeds_claim {
        format!(
            "REFUTED: the one-run lower bound {} exceeds the claimed epsilon {} (significance {}): this run does NOT deliver its privacy guarantee; on a run that clips and adds the stated noise this is a bug.",
            fmt_f64(a.epsilon_lower_bound),
            fmt_f64(a.claimed_epsilon),
            a.significance
        )
    } else {
        format!(
            "consistent with the claim: the one-run bound {} is at most the claimed epsilon {} ({:.0}% of it; a black-box audit of the final model is expected to be far below the claim).",
            fmt_f64(a.epsilon_lower_bound),
            fmt_f64(a.claimed_epsilon),
            100.0 * a.epsilon_lower_bound / a.claimed_epsilon
        )
    };
    for w in &a.warnings {
        t += &format!("\nwarning: {w}");
    }
    t
}

/// `memaudit train` with `--audit-canaries`: train (writing what `train_with_report` writes),
/// then audit and add the result to the text, the JSON, run.json and report.html.
pub fn train_and_audit(
    ctx: &Ctx,
    rd: &mut RunDir,
    trainer: &mut Trainer,
    prepared: &Prepared,
    n: usize,
    canaries: &AuditCanaries,
    delta: f64,
) -> Result<Report> {
    let outcome = train_with_report_hooks(
        ctx,
        rd,
        trainer,
        prepared,
        n,
        TrainHooks {
            epoch: None,
            step: None,
            logs: None,
            write_html: false,
            finish_run: false,
        },
        "memaudit train",
    )?;
    ctx.note(format!("scoring {} audit canaries", canaries.manifest.m()));
    let a = audit(rd, trainer, canaries, prepared.tokenizer.as_ref(), delta)?;
    let text = audit_text(&a);
    let mut summary = outcome.summary;
    summary["black_box_audit"] = serde_json::to_value(&a)?;
    rd.set("results", summary.clone())?;
    let mut html = outcome.html;
    html.heading("Black-box audit");
    html.pre(&text);
    html.write(&rd.file("report.html"))?;
    rd.finish("completed")?;
    Ok(Report::new(
        with_section(&outcome.report.text, &text),
        summary,
    ))
}

/// `text` with `section` before its closing "run folder:" lines.
pub fn with_section(text: &str, section: &str) -> String {
    match text.rfind("\n\nrun folder:") {
        Some(i) => format!("{}\n\n{section}{}", &text[..i], &text[i..]),
        None => format!("{text}\n\n{section}"),
    }
}
