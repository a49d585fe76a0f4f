//! `report.html` of an audit: the plain-language summary per variant at the top, the verdict
//! line, the selection caveat, then the plots (training curves, exposure histogram with its
//! skew-normal fit, exposure vs epoch, ROC curves on log-log axes with each DP variant's
//! (epsilon, delta) trade-off line, lower bound vs claimed epsilon, utility vs privacy) and the
//! tables. Self-contained: SVG inline, no script, no external URL.

use std::path::Path;

use memaudit_audit::SkewNormal;

use super::results::{AuditResults, DataSummary};
use crate::error::Result;
use crate::report::{Report, Series, chart, histogram};

/// Lowest FPR drawn on the log-log ROC plot (log10).
const LOG10_FPR_FLOOR: f64 = -4.0;

fn fmt_eps(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "inf (no claim)".to_string()
    }
}

/// The (epsilon, delta)-DP limit on an attack's ROC: TPR <= min(e^eps FPR + delta,
/// 1 - e^-eps (1 - delta - FPR)) (Kairouz et al. 2015's region), as log10 points.
fn tradeoff_line(eps: f64, delta: f64) -> Vec<(f64, f64)> {
    (0..=80)
        .map(|i| LOG10_FPR_FLOOR * (1.0 - i as f64 / 80.0))
        .map(|lf| {
            let f = 10f64.powf(lf);
            let t = (eps.exp() * f + delta)
                .min(1.0 - (-eps).exp() * (1.0 - delta - f))
                .min(1.0);
            (lf, t.log10())
        })
        .collect()
}

/// Render the report of `r` into `path`.
pub fn write_report(r: &AuditResults, path: &Path) -> Result<()> {
    render(r).write(path)
}

/// The report page.
pub fn render(r: &AuditResults) -> Report {
    let mut h = Report::new("memaudit audit: what this training recipe leaks");
    h.heading("Summary");
    for line in &r.summary {
        h.para(line);
    }
    h.heading("Verdict");
    if r.verdict.broken {
        let dp_broken: Vec<&str> = r
            .variants
            .iter()
            .filter(|v| v.privacy.claimed_epsilon.0.is_finite())
            .filter(|v| r.verdict.broken_variants.contains(&v.name))
            .map(|v| v.name.as_str())
            .collect();
        h.pre(&format!(
            "!!! WARNING: A LOWER BOUND EXCEEDS THE CLAIMED EPSILON OF {} !!!\nFor a correct DP-SGD run this happens with probability at most {} (the family-wise significance). Treat the privacy claim of {} as broken until the clipping, the noise and the accounting are checked.",
            dp_broken.join(", ").to_uppercase(),
            r.verdict.family_significance,
            dp_broken.join(", ")
        ));
    }
    h.para(&r.verdict.line);
    h.para(
        "How the verdict compares: each bound is at the variant's own delta; a canary inserted r times is r protected windows, so its bound is compared with the group epsilon for r windows, not with epsilon; every bound of every variant is one test, and each is computed at the family-wise significance divided by their number (Bonferroni).",
    );
    if let Some(c) = &r.selection_caveat {
        h.para(c);
    }
    h.para(&match &r.data {
        DataSummary::Text(d) => format!(
            "Data: {} ({} level), {} training windows, {} validation windows, vocabulary {}; canaries \"{}\" from |R| = {:.3e} candidates.",
            d.corpus,
            d.level,
            d.train_windows,
            d.valid_windows,
            d.vocab_size,
            d.template,
            d.canary_space_size.0
        ),
        DataSummary::Dataset(d) => format!(
            "Data: the {} dataset, {} training images, {} held-out images (validation and RMIA population), {} classes, {}x{}x{}. A classifier has no Secret Sharer canaries: exposure and extraction do not apply; the one-run audit inserts relabelled training examples.",
            d.dataset,
            d.train_examples,
            d.test_examples,
            d.classes,
            d.input_shape[0],
            d.input_shape[1],
            d.input_shape[2]
        ),
    });

    h.heading("Variants");
    let rows: Vec<Vec<String>> = r
        .variants
        .iter()
        .map(|v| {
            let max_lb = v
                .lower_bounds
                .iter()
                .map(|b| b.epsilon_lower_bound.0)
                .fold(f64::NAN, f64::max);
            vec![
                v.name.clone(),
                v.kind.clone(),
                fmt_eps(v.privacy.claimed_epsilon.0),
                format!("{:e}", v.privacy.delta),
                v.utility
                    .valid_loss
                    .map_or("-".into(), |x| format!("{:.3}", x.0)),
                v.utility
                    .valid_accuracy
                    .map_or("-".into(), |x| format!("{:.3}", x.0)),
                if max_lb.is_nan() {
                    "-".into()
                } else {
                    format!("{max_lb:.2}")
                },
            ]
        })
        .collect();
    h.table(
        &[
            "variant",
            "kind",
            "claimed epsilon (ledger)",
            "delta",
            "valid loss",
            "valid accuracy",
            "largest lower bound",
        ],
        &rows,
    );

    h.heading("Training curves");
    let mut curves = Vec::new();
    for v in &r.variants {
        let pts = |f: &dyn Fn(&super::results::EpochPoint) -> Option<f64>| {
            v.training_curve
                .iter()
                .filter_map(|p| f(p).map(|y| (p.epoch, y)))
                .collect::<Vec<_>>()
        };
        curves.push(Series::line(
            &format!("{} valid", v.name),
            pts(&|p| p.valid_loss.map(|x| x.0)),
        ));
        curves.push(Series::line(
            &format!("{} train", v.name),
            pts(&|p| p.train_loss.map(|x| x.0)),
        ));
    }
    let loss_unit = match r.data {
        DataSummary::Text(_) => "loss (nats/token)",
        DataSummary::Dataset(_) => "loss (nats/example)",
    };
    h.svg(&chart("Training curves", "epoch", loss_unit, &curves));

    // Exposure is the Secret Sharer's (text): no heading, chart or table without it.
    let has_exposure = r.variants.iter().any(|v| v.exposure.is_some());
    if has_exposure {
        h.heading("Exposure");
    }
    for v in &r.variants {
        let Some(e) = &v.exposure else { continue };
        let refs: Vec<f64> = e.reference_log_perplexities.iter().map(|x| x.0).collect();
        let fit = e
            .skew_normal
            .as_ref()
            .and_then(|f| SkewNormal::new(f.shape, f.location, f.scale).ok());
        let pdf = fit.map(|s| move |x: f64| s.pdf(x));
        let curve: Option<(&str, &dyn Fn(f64) -> f64)> = pdf
            .as_ref()
            .map(|f| ("skew-normal fit", f as &dyn Fn(f64) -> f64));
        h.svg(&histogram(
            &format!(
                "{}: log-perplexity of reference candidates, with the skew-normal fit",
                v.name
            ),
            "log-perplexity (bits)",
            &refs,
            40,
            curve,
            &[],
        ));
    }
    let mut by_epoch = Vec::new();
    for v in &r.variants {
        let Some(e) = &v.exposure else { continue };
        let mut reps: Vec<u32> = e.by_epoch.iter().map(|p| p.repetitions).collect();
        reps.sort_unstable();
        reps.dedup();
        for rep in reps {
            by_epoch.push(Series::line(
                &format!("{} r={rep}", v.name),
                e.by_epoch
                    .iter()
                    .filter(|p| p.repetitions == rep)
                    .map(|p| (p.epoch, p.mean_exposure.0))
                    .collect(),
            ));
        }
    }
    if has_exposure {
        h.svg(&chart(
            "Exposure vs epoch (mean per repetition count)",
            "epoch",
            "exposure (bits)",
            &by_epoch,
        ));
    }
    let mut canary_rows = Vec::new();
    for v in &r.variants {
        let Some(e) = &v.exposure else { continue };
        for c in &e.canaries {
            canary_rows.push(vec![
                v.name.clone(),
                c.text.clone(),
                c.repetitions.to_string(),
                format!("{:.2}", c.exposure.0),
                if c.exact { "exact" } else { "extrapolated" }.to_string(),
                c.extracted
                    .map_or("-".into(), |x| if x { "yes".into() } else { "no".into() }),
            ]);
        }
    }
    if has_exposure {
        h.table(
            &[
                "variant",
                "canary",
                "repetitions",
                "exposure (bits)",
                "method",
                "extracted",
            ],
            &canary_rows,
        );
    }

    h.heading("Membership inference: ROC curves (log-log)");
    let mut roc = Vec::new();
    for v in &r.variants {
        let Some(m) = &v.mia else { continue };
        for a in &m.attacks {
            roc.push(Series {
                name: format!("{} {} (AUC {:.2})", v.name, a.attack, a.auc.0),
                points: a
                    .roc
                    .iter()
                    .filter(|p| p[0].0 > 0.0 && p[1].0 > 0.0)
                    .map(|p| (p[0].0.log10().max(LOG10_FPR_FLOOR), p[1].0.log10()))
                    .collect(),
                markers: false,
                scatter: false,
            });
        }
    }
    for v in r
        .variants
        .iter()
        .filter(|v| v.privacy.claimed_epsilon.0.is_finite())
    {
        roc.push(Series {
            name: format!(
                "{}: (eps {:.2}, delta {:e}) limit",
                v.name, v.privacy.claimed_epsilon.0, v.privacy.delta
            ),
            points: tradeoff_line(v.privacy.claimed_epsilon.0, v.privacy.delta),
            markers: false,
            scatter: false,
        });
    }
    roc.push(Series {
        name: "chance".into(),
        points: vec![(LOG10_FPR_FLOOR, LOG10_FPR_FLOOR), (0.0, 0.0)],
        markers: false,
        scatter: false,
    });
    h.svg(&chart(
        "ROC of every attack and variant",
        "log10 false positive rate",
        "log10 true positive rate",
        &roc,
    ));
    let mia_rows: Vec<Vec<String>> = r
        .variants
        .iter()
        .filter_map(|v| v.mia.as_ref().map(|m| (v, m)))
        .flat_map(|(v, m)| {
            m.attacks.iter().map(move |a| {
                vec![
                    v.name.clone(),
                    a.attack.clone(),
                    format!("{:.3}", a.auc.0),
                    reportable(a.tpr_at_0_1_fpr.0),
                    reportable(a.tpr_at_1_fpr.0),
                    m.shadow_models.to_string(),
                ]
            })
        })
        .collect();
    h.table(
        &[
            "variant",
            "attack",
            "AUC",
            "TPR at 0.1% FPR",
            "TPR at 1% FPR",
            "shadow models",
        ],
        &mia_rows,
    );

    h.heading("Lower bounds vs claimed epsilon");
    let mut lb_series = Vec::new();
    let xs: Vec<(usize, &super::results::VariantResults)> = r.variants.iter().enumerate().collect();
    lb_series.push(Series::scatter(
        "largest lower bound",
        xs.iter()
            .filter(|(_, v)| !v.lower_bounds.is_empty())
            .map(|(i, v)| {
                let m = v
                    .lower_bounds
                    .iter()
                    .map(|b| b.epsilon_lower_bound.0)
                    .fold(0.0, f64::max);
                ((i + 1) as f64, m)
            })
            .collect(),
    ));
    lb_series.push(Series::scatter(
        "claimed epsilon",
        xs.iter()
            .filter(|(_, v)| v.privacy.claimed_epsilon.0.is_finite())
            .map(|(i, v)| ((i + 1) as f64, v.privacy.claimed_epsilon.0))
            .collect(),
    ));
    let names: Vec<String> = r
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} = {}", i + 1, v.name))
        .collect();
    h.svg(&chart(
        &format!(
            "Lower bound vs claimed epsilon (variants: {})",
            names.join(", ")
        ),
        "variant",
        "epsilon",
        &lb_series,
    ));
    let lb_rows: Vec<Vec<String>> = r
        .verdict
        .bounds
        .iter()
        .map(|b| {
            vec![
                b.variant.clone(),
                b.audit.clone(),
                b.group_size.to_string(),
                format!("{:.3}", b.epsilon_lower_bound.0),
                fmt_eps(b.claimed_epsilon.0),
                format!("{:e}", b.delta),
                if b.exceeds_claim {
                    "EXCEEDS".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    h.table(
        &[
            "variant",
            "audit",
            "windows per canary",
            "lower bound",
            "claim (group epsilon)",
            "delta",
            "exceeds claim",
        ],
        &lb_rows,
    );

    h.heading("Utility vs privacy");
    let up: Vec<Series> = r
        .variants
        .iter()
        .filter_map(|v| {
            let loss = v.utility.valid_loss?.0;
            let lb = v
                .lower_bounds
                .iter()
                .map(|b| b.epsilon_lower_bound.0)
                .fold(0.0, f64::max);
            Some(Series::scatter(
                &format!(
                    "{} (claimed {})",
                    v.name,
                    fmt_eps(v.privacy.claimed_epsilon.0)
                ),
                vec![(lb, loss)],
            ))
        })
        .collect();
    h.svg(&chart(
        "Utility vs privacy: validation loss against the largest empirical lower bound on epsilon",
        "largest lower bound on epsilon",
        "valid loss (nats/token)",
        &up,
    ));
    h.para("Lower is better on both axes: a variant to the left leaks less in these audits; one lower down predicts better.");
    h.heading("Configuration");
    h.pre(&crate::config::to_toml(&r.config).unwrap_or_default());
    h
}

/// A TPR cell: "n/a" where too few non-members make the rate unreportable (NaN).
fn reportable(tpr: f64) -> String {
    if tpr.is_finite() {
        format!("{tpr:.4}")
    } else {
        "n/a".into()
    }
}
