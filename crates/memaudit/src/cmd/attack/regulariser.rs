//! `memaudit attack correlation|sign`: the flags as the library's `CorrelationConfig` or
//! `SignConfig` (`memaudit_experiments::attacks::regulariser`), and the rendering of the result.

use anyhow::Result;
use memaudit_experiments::attacks::regulariser::{
    self as lib, CorrelationConfig, Decoding, Encoding, RegulariserConfig, RegulariserResult,
    RegulariserSecret, SignConfig,
};

use super::super::experiment::{self, Resolved};
use super::{CommonArgs, accuracy_chart, finish, header, model_rows, run_attack};
use crate::Ctx;
use crate::output::{Report, fmt_f64};
use crate::report::{self, Series};

#[derive(clap::Args, Debug)]
pub struct PenaltyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Weight of the malicious regulariser, >= 0 (default: 1 for correlation, the authors'
    /// test default; 10 for sign). The sign penalty is a mean over the selected weights, so the
    /// pull on each weight is lambda / (number of secret bits).
    #[arg(long, value_name = "LAMBDA", allow_negative_numbers = true)]
    pub lambda: Option<f64>,
}

fn penalty_config(a: &PenaltyArgs) -> RegulariserConfig {
    RegulariserConfig {
        common: a.common.settings(),
        lambda: a.lambda,
    }
}

pub fn run_correlation(a: &PenaltyArgs, ctx: &Ctx) -> Result<Report> {
    let flags = &a.common.config;
    let given = CorrelationConfig(penalty_config(a));
    let cfg = match experiment::resolve(flags, given, ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let r = run_attack(ctx, flags, |obs, hooks| {
        lib::run_correlation_with(&cfg, obs, hooks)
    })?;
    render(&r)
}

pub fn run_sign(a: &PenaltyArgs, ctx: &Ctx) -> Result<Report> {
    let flags = &a.common.config;
    let given = SignConfig(penalty_config(a));
    let cfg = match experiment::resolve(flags, given, ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let r = run_attack(ctx, flags, |obs, hooks| {
        lib::run_sign_with(&cfg, obs, hooks)
    })?;
    render(&r)
}

/// A number of a decoding, or "-" where the run has none.
fn f(x: Option<memaudit_experiments::Num>) -> String {
    x.map_or("-".into(), |v| fmt_f64(v.0))
}

fn render(r: &RegulariserResult) -> Result<Report> {
    let enc = r.encoding;
    let s = &r.scale;
    let (conv, mal) = (&r.conventional, &r.malicious);
    let (lambda, used, capacity) = (r.lambda, r.capacity.used, r.capacity.available);
    let (measure_mal, measure_conv) = r.measure;
    let measure_name = enc.measure_name();
    let mut html = report::Report::new(&format!(
        "memaudit attack {}: {} on {}",
        enc.command(),
        s.model,
        s.dataset
    ));
    html.para(&match enc {
        Encoding::Correlation => format!(
            "Correlated value encoding (Song, Ristenpart, Shmatikov, CCS 2017, attack B). White \
box: the malicious training code adds -lambda |r| (lambda = {lambda}) to the loss, r being the \
Pearson correlation between the first {used} weights with ndim > 1 and the secret's pixels; the \
attacker min-max rescales those weights back to images. DP-SGD does not stop it: the penalty \
depends only on the parameters and is added after the noise."
        ),
        Encoding::Sign => format!(
            "Sign encoding (Song, Ristenpart, Shmatikov, CCS 2017, attack C). White box: the \
malicious training code adds lambda * mean max(0, -s_i theta_i) (lambda = {lambda}) to the loss, \
which pushes the first {used} weights with ndim > 1 to the signs of the secret's bits; the \
attacker reads the signs. DP-SGD does not stop it: the penalty depends only on the parameters \
and is added after the noise."
        ),
    });
    html.table(&["", "conventional", "malicious"], &model_rows(conv, mal));
    html.svg(&accuracy_chart(conv, mal));
    if !mal.trace.is_empty() {
        html.svg(&report::chart(
            &format!("{measure_name} of the malicious model"),
            "epoch",
            measure_name,
            &[Series::line("malicious", mal.trace.clone())],
        ));
    }
    let drop = r.accuracy_drop_points.0;
    let mut text = header(enc.paper_name(), s);
    text += &format!(
        "\ntest accuracy: conventional {}, malicious {} ({drop:+.2} points), lambda {lambda}",
        fmt_f64(conv.test_accuracy.0),
        fmt_f64(mal.test_accuracy.0)
    );
    let (d, c): (&Decoding, &Decoding) = (&r.decoding, &r.control_conventional);
    match &r.secret {
        RegulariserSecret::Images {
            images,
            height: h,
            width: w,
            bits: raw_bits,
            ..
        } => {
            let baseline = f(d.mean_image_baseline_mape);
            let median = f(d.median_image_baseline_mape);
            html.heading("Decoding");
            html.table(
                &["", "malicious model", "conventional model (control)"],
                &[
                    vec!["MAPE (0-255)".into(), f(d.mape), f(c.mape)],
                    vec![
                        "mean-image guess MAPE".into(),
                        baseline.clone(),
                        baseline.clone(),
                    ],
                    vec![
                        "median-image guess MAPE".into(),
                        median.clone(),
                        median.clone(),
                    ],
                    vec!["|cosine|".into(), f(d.cosine), f(c.cosine)],
                    vec![
                        measure_name.into(),
                        fmt_f64(measure_mal),
                        fmt_f64(measure_conv),
                    ],
                ],
            );
            html.para(&format!(
                "Secret: the first {images} {} ({h}x{w}, {raw_bits} bits), carried by {used} of \
the {capacity} eligible weights. The control runs the same decoder on the conventional model.",
                r.secret_what
            ));
            if enc == Encoding::Correlation {
                html.para(&format!(
                    "One orientation for all images (the correlation's sign, one bit the \
attacker guesses). The authors' per-image best of image and inverse, which looks at the \
original, gives MAPE {}.",
                    f(d.mape_best_of_two)
                ));
            }
            if let Some(svg) = &r.grid_svg {
                html.svg(svg);
            }
            text += &format!(
                "\nsecret: {images} {} of {h}x{w} ({raw_bits} bits) in {used} of {capacity} weights\ndecoding: MAPE {} (mean-image guess {baseline}, median-image guess {median}; the conventional model decodes to {}), |cosine| {}, {measure_name} {}",
                r.secret_what,
                f(d.mape),
                f(c.mape),
                f(d.cosine),
                fmt_f64(measure_mal),
            );
        }
        RegulariserSecret::Text {
            documents,
            words,
            bits,
            bits_per_word,
            ..
        } => {
            html.heading("Decoding");
            html.table(
                &["", "malicious model", "conventional model (control)"],
                &[
                    vec![
                        "word precision (per document)".into(),
                        f(d.precision),
                        f(c.precision),
                    ],
                    vec![
                        "word recall (per document)".into(),
                        f(d.recall),
                        f(c.recall),
                    ],
                    vec![
                        "word precision (corpus)".into(),
                        f(d.corpus_precision),
                        f(c.corpus_precision),
                    ],
                    vec![
                        "word recall (corpus)".into(),
                        f(d.corpus_recall),
                        f(c.corpus_recall),
                    ],
                    vec![
                        "correct signs".into(),
                        fmt_f64(measure_mal),
                        fmt_f64(measure_conv),
                    ],
                ],
            );
            if let Some((original, recovered)) = &r.first_review {
                html.heading("First review (distinct in-vocabulary words, by feature index)");
                html.pre(&format!("original:  {original}\nrecovered: {recovered}"));
            }
            text += &format!(
                "\nsecret: {documents} reviews, {words} words ({bits} bits, {bits_per_word} per word) in {used} of {capacity} weight signs\ndecoding: word precision {}, recall {} (corpus: {}, {}); the conventional model decodes to recall {}",
                f(d.precision),
                f(d.recall),
                f(d.corpus_precision),
                f(d.corpus_recall),
                f(c.recall),
            );
        }
    }
    finish(&html, &r.report, text, r)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        inner: PenaltyArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let a = Wrap::try_parse_from(["sign", "--out", "o"]).unwrap().inner;
        let mut cfg = penalty_config(&a);
        cfg.common.run.out = Default::default();
        assert_eq!(cfg, RegulariserConfig::default());
    }
}
