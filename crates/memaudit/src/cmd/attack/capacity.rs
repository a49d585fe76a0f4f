//! `memaudit attack capacity`: the flags as the library's `CapacityConfig`
//! (`memaudit_experiments::attacks::capacity`), and the rendering of its result.

use anyhow::Result;
use memaudit_experiments::attacks::capacity::{self as lib, CapacityConfig, CapacityResult};

use super::super::experiment::{self, Resolved};
use super::{CommonArgs, accuracy_chart, finish, header, model_rows, run_attack};
use crate::Ctx;
use crate::output::{Report, fmt_f64};
use crate::report::{self, Series};

#[derive(clap::Args, Debug)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Synthetic inputs the attacker may add, as a fraction of the real training examples (the
    /// authors' p); the secret is as many whole images as they carry.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.1,
        allow_negative_numbers = true
    )]
    pub synthetic_ratio: f64,
    /// How labels carry the secret: nibble-pairs (the authors' code: a pixel's high 4 bits as
    /// two labels, 2 bits per query, needs >= 9 classes) or bits (floor(log2 classes) bits per
    /// label). Default: nibble-pairs with >= 9 classes, else bits.
    #[arg(long, value_name = "SCHEME")]
    pub labels: Option<String>,
    /// Synthetic inputs: noise (uniform pixels from ChaCha8 seeded with --input-seed, the
    /// paper's GenData; recommended for the GroupNorm CNN) or markers (the authors' sparse
    /// two-pixel inputs).
    #[arg(long, value_name = "KIND", default_value = "noise")]
    pub inputs: String,
    /// The attacker's seed for the synthetic inputs (default: --seed).
    #[arg(long, value_name = "SEED")]
    pub input_seed: Option<u64>,
    /// Put every synthetic example this many times in the training set (the malicious code
    /// oversamples its own examples so that a few epochs memorise them; the authors instead
    /// trained 100 epochs). Under DP-SGD each copy is clipped and noised as its own example.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub synthetic_repeat: usize,
}

fn capacity_config(a: &CapacityArgs) -> CapacityConfig {
    CapacityConfig {
        common: a.common.settings(),
        synthetic_ratio: a.synthetic_ratio,
        labels: a.labels.clone(),
        inputs: a.inputs.clone(),
        input_seed: a.input_seed,
        synthetic_repeat: a.synthetic_repeat,
    }
}

pub fn run(a: &CapacityArgs, ctx: &Ctx) -> Result<Report> {
    let flags = &a.common.config;
    let cfg = match experiment::resolve(flags, capacity_config(a), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let r = run_attack(ctx, flags, |obs, hooks| lib::run_with(&cfg, obs, hooks))?;
    render(&r)
}

fn render(r: &CapacityResult) -> Result<Report> {
    let s = &r.scale;
    let (conv, mal) = (&r.conventional, &r.malicious);
    let syn = &r.synthetic;
    let (d, c) = (&r.decoding, &r.control_conventional);
    let secret = &r.secret;
    let mut html = report::Report::new(&format!(
        "memaudit attack capacity: {} on {}",
        s.model, s.dataset
    ));
    html.para(&format!(
        "Capacity abuse (Song, Ristenpart, Shmatikov, CCS 2017, attack D). Black box: the \
malicious training code adds {} synthetic inputs ({}, regenerated from the attacker's seed) to \
the {} real examples, labelled so that the labels spell the secret ({} scheme, {} bits \
per query). After deployment the attacker queries the model on the regenerated inputs. {}",
        syn.inputs,
        if syn.input_kind == "noise" {
            "uniform noise"
        } else {
            "sparse markers"
        },
        r.real_examples,
        syn.labels,
        syn.bits_per_query,
        if s.private {
            "Both models were trained with DP-SGD: every synthetic example was clipped and noised like any other."
        } else {
            "Training was not private."
        }
    ));
    html.table(&["", "conventional", "malicious"], &model_rows(conv, mal));
    html.svg(&accuracy_chart(conv, mal));
    if !mal.trace.is_empty() {
        html.svg(&report::chart(
            "Synthetic labels the malicious model predicts right",
            "epoch",
            "fraction of synthetic labels",
            &[Series::line("malicious", mal.trace.clone())],
        ));
    }
    let both = |x: f64| vec![fmt_f64(x), fmt_f64(x)];
    let row = |name: &str, v: Vec<String>| [vec![name.to_string()], v].concat();
    html.heading("Decoding");
    html.table(
        &["", "malicious model", "conventional model (control)"],
        &[
            row("MAPE (0-255)", vec![fmt_f64(d.mape.0), fmt_f64(c.mape.0)]),
            row("mean-image guess MAPE", both(d.mean_image_baseline_mape.0)),
            row(
                "median-image guess MAPE",
                both(d.median_image_baseline_mape.0),
            ),
            row(
                "MAPE if every label were memorised",
                both(d.perfect_memorization_mape.0),
            ),
            row("|cosine|", vec![fmt_f64(d.cosine.0), fmt_f64(c.cosine.0)]),
            row(
                "synthetic labels right",
                vec![fmt_f64(d.label_accuracy.0), fmt_f64(c.label_accuracy.0)],
            ),
            row(
                "most frequent label's share",
                both(d.majority_label_share.0),
            ),
        ],
    );
    html.svg(&r.grid_svg);

    let mut text = header("capacity abuse", s);
    text += &format!(
        "\ntest accuracy: conventional {}, malicious {} ({:+.2} points){}",
        fmt_f64(conv.test_accuracy.0),
        fmt_f64(mal.test_accuracy.0),
        r.accuracy_drop_points.0,
        mal.epsilon
            .map_or(String::new(), |e| format!(", epsilon {}", fmt_f64(e.0)))
    );
    text += &format!(
        "\nsecret: {} {} of {}x{} in {} synthetic inputs x {} ({} labels, {} bits per query)",
        secret.images,
        r.secret_what,
        secret.height,
        secret.width,
        syn.inputs,
        syn.repeat,
        syn.labels,
        syn.bits_per_query
    );
    text += &format!(
        "\ndecoding: MAPE {} (mean-image guess {}, median-image guess {}, perfect memorisation {}; the conventional model decodes to {}), |cosine| {}, synthetic labels right {} (most frequent label {})",
        fmt_f64(d.mape.0),
        fmt_f64(d.mean_image_baseline_mape.0),
        fmt_f64(d.median_image_baseline_mape.0),
        fmt_f64(d.perfect_memorization_mape.0),
        fmt_f64(c.mape.0),
        fmt_f64(d.cosine.0),
        fmt_f64(d.label_accuracy.0),
        fmt_f64(d.majority_label_share.0)
    );
    finish(&html, &r.report, text, r)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        inner: CapacityArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let a = Wrap::try_parse_from(["capacity", "--out", "o"])
            .unwrap()
            .inner;
        let mut cfg = capacity_config(&a);
        cfg.common.run.out = Default::default();
        assert_eq!(cfg, CapacityConfig::default());
    }
}
