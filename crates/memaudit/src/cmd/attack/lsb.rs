//! `memaudit attack lsb`: the flags as `memaudit_experiments::attacks::LsbConfig`, and the
//! rendering of its result.

use anyhow::Result;
use memaudit_experiments::attacks::lsb::{self as lib, LsbConfig, LsbResult};

use super::super::experiment::{self, Resolved};
use super::{CommonArgs, finish, header, run_attack};
use crate::Ctx;
use crate::output::{Report, fmt_f64};
use crate::report::{self, Series};

#[derive(clap::Args, Debug)]
pub struct LsbArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Low mantissa bits overwritten in every parameter, 1..=23 (the authors' default 16); a
    /// comma-separated list embeds into copies of one model: accuracy against b.
    #[arg(
        long,
        value_name = "B",
        value_delimiter = ',',
        default_value = "16",
        allow_negative_numbers = true
    )]
    pub bits: Vec<i64>,
    /// Encrypt the secret under this 256-bit key (64 hex digits) with ChaCha20-Poly1305, so that
    /// a wrong key fails loudly (the authors used unauthenticated AES-CBC). Never read from or
    /// written to a --config file.
    #[arg(long, value_name = "HEX", conflicts_with = "passphrase")]
    pub key: Option<String>,
    /// Encrypt under a key derived from this passphrase (Argon2id).
    #[arg(long, value_name = "TEXT")]
    pub passphrase: Option<String>,
}

fn lsb_config(a: &LsbArgs) -> LsbConfig {
    LsbConfig {
        common: a.common.settings(),
        bits: a.bits.clone(),
        key: a.key.clone(),
        passphrase: a.passphrase.clone(),
    }
}

pub fn run(a: &LsbArgs, ctx: &Ctx) -> Result<Report> {
    let flags = &a.common.config;
    // Key material is no config field (never in a file): the flags set it after the merge.
    let adjust = |cfg: &mut LsbConfig| {
        cfg.key.clone_from(&a.key);
        cfg.passphrase.clone_from(&a.passphrase);
        Ok(())
    };
    let cfg = match experiment::resolve_with(flags, lsb_config(a), ctx, adjust)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let r = run_attack(ctx, flags, |obs, hooks| lib::run_with(&cfg, obs, hooks))?;
    render(&r)
}

fn render(r: &LsbResult) -> Result<Report> {
    let s = &r.scale;
    let conv = &r.conventional;
    let rows: Vec<Vec<String>> = r
        .settings
        .iter()
        .map(|x| {
            vec![
                x.bits.to_string(),
                fmt_f64(x.test_accuracy.0),
                format!("{:+.2}", x.accuracy_drop_points.0),
                format!("{:.1}%", 100.0 * x.capacity_used.0),
                fmt_f64(x.max_relative_change.0),
                if x.round_trip_exact {
                    "exact".into()
                } else {
                    "differs".into()
                },
            ]
        })
        .collect();
    let secret = &r.secret;
    let mut html = report::Report::new(&format!(
        "memaudit attack lsb: {} on {}",
        s.model, s.dataset
    ));
    html.para(
        "LSB encoding (Song, Ristenpart, Shmatikov, CCS 2017, attack A). White box: after honest \
training, malicious code overwrites the low b mantissa bits of every parameter with the \
compressed (and, with a key, encrypted) secret; whoever gets the parameters reads it back. DP-SGD \
cannot help: this is post-processing of the trained parameters by the training code itself.",
    );
    html.table(
        &["", ""],
        &[
            vec!["secret".into(), secret.description.clone()],
            vec!["secret bits (raw)".into(), secret.raw_bits.to_string()],
            vec![
                "stream bits (compressed + envelope)".into(),
                secret.stream_bits.to_string(),
            ],
            vec!["parameters".into(), s.parameters.to_string()],
            vec!["encrypted".into(), secret.encrypted.to_string()],
            vec![
                "conventional test accuracy".into(),
                fmt_f64(conv.test_accuracy.0),
            ],
            vec!["conventional run".into(), conv.run.display().to_string()],
        ],
    );
    html.heading("Accuracy against b");
    html.table(
        &[
            "b",
            "test accuracy",
            "drop (points)",
            "capacity used",
            "max relative change",
            "decoded",
        ],
        &rows,
    );
    let acc: Vec<(f64, f64)> = r
        .settings
        .iter()
        .map(|x| (f64::from(x.bits), x.test_accuracy.0))
        .collect();
    let bits = r.settings.iter().map(|x| f64::from(x.bits));
    let (lo, hi) = (
        bits.clone().fold(f64::INFINITY, f64::min),
        bits.fold(0.0, f64::max),
    );
    let conv_acc = conv.test_accuracy.0;
    html.svg(&report::chart(
        "Test accuracy against b",
        "low bits overwritten per parameter (b)",
        "test accuracy",
        &[
            Series::line("with the secret embedded", acc),
            Series::line("conventional", vec![(lo, conv_acc), (hi, conv_acc)]),
        ],
    ));
    if let (Some(svg), Some(baseline)) = (&r.grid_svg, r.mean_image_baseline_mape) {
        html.heading("Recovered images");
        html.para(&format!(
            "Decoding is exact: MAPE 0 against a mean-image guess of {:.1} (0-255 scale).",
            baseline.0
        ));
        html.svg(svg);
    }
    if let Some((original, recovered)) = &r.first_review {
        html.heading("First review");
        html.pre(&format!("original:  {original}\nrecovered: {recovered}"));
    }

    let mut text = header("LSB encoding", s);
    text += &format!(
        "\nsecret: {} ({} bits raw, {} bits compressed{})",
        secret.description,
        secret.raw_bits,
        secret.stream_bits,
        if secret.encrypted {
            " and encrypted"
        } else {
            ""
        }
    );
    text += &format!(
        "\nconventional test accuracy {}\n  b  accuracy  drop(points)  capacity used  decoded",
        fmt_f64(conv_acc)
    );
    for row in &rows {
        text += &format!(
            "\n{:>3}  {:>8}  {:>12}  {:>13}  {}",
            row[0], row[1], row[2], row[3], row[5]
        );
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
        inner: LsbArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let a = Wrap::try_parse_from(["lsb", "--out", "o"]).unwrap().inner;
        let mut cfg = lsb_config(&a);
        cfg.common.run.out = Default::default();
        assert_eq!(cfg, LsbConfig::default());
    }
}
