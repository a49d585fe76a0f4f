//! `--audit-canaries M` for `train` and `secret-sharer`: the black-box one-run audit a run
//! carries. The audit itself (inserting the canaries, the manifest, scoring and bounding) is
//! `memaudit_experiments::audit_canaries`; this module renders its result.

pub use memaudit_experiments::audit_canaries::BlackBoxAudit;

use crate::output::fmt_f64;

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
