//! `sample` as an experiment: text from a saved language model, one token at a time through
//! its incremental inference (the same `IncrementalLm` the exposure scorer uses).

use std::path::PathBuf;

use memaudit_audit::{CanaryTokenizer, IncrementalLm};
use memaudit_data::{Tokenizer, TokenizerKind};
use memaudit_engine::memory;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::Num;
use crate::observer::Observer;
use crate::saved_run::load_lm;
use crate::secret_sharer::{VocabTokenizer, separator};

/// Samples of a saved language model (`memaudit sample`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// A run folder of a language model (`train` on text, `secret-sharer`).
    pub run: PathBuf,
    /// Text the sample continues (empty: the start of a line).
    pub prefix: String,
    /// Tokens to generate per sample.
    pub length: usize,
    /// Softmax temperature: p ~ exp(log p / T); 0 always takes the most likely token.
    pub temperature: f64,
    /// Seed of the draws (`None`: drawn at random and reported in the result).
    pub seed: Option<u64>,
    /// Independent samples.
    pub count: usize,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            run: PathBuf::new(),
            prefix: String::new(),
            length: 200,
            temperature: 0.8,
            seed: None,
            count: 1,
        }
    }
}

impl ExperimentConfig for SampleConfig {
    const NAME: &'static str = "sample";

    fn validate(&self) -> Result<()> {
        if self.run.as_os_str().is_empty() {
            return invalid("run", "\"\"", "give the run folder");
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return invalid("temperature", self.temperature, "must be >= 0 and finite");
        }
        if self.length == 0 {
            return invalid("length", 0, "must be at least 1");
        }
        if self.count == 0 {
            return invalid("count", 0, "must be at least 1");
        }
        Ok(())
    }
}

/// The samples. Serialised, it is `memaudit sample --json`.
#[derive(Clone, Debug, Serialize)]
pub struct SampleResult {
    pub run: String,
    /// The optimizer step of the checkpoint sampled.
    pub step: u64,
    pub prefix: String,
    pub length: usize,
    pub temperature: Num,
    /// The seed of the draws: the config's, or the one drawn at random.
    pub seed: u64,
    /// `count` texts, each the prefix and its continuation.
    pub samples: Vec<String>,
}

/// Draw a token from natural-log probabilities at a temperature (0: argmax).
fn draw(log_probs: &[f32], temperature: f64, rng: &mut ChaCha8Rng) -> u32 {
    if temperature == 0.0 {
        return log_probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32);
    }
    // Shifted by the maximum so that exp does not overflow at small temperatures.
    let m = log_probs.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = log_probs
        .iter()
        .map(|&l| ((l as f64 - m) / temperature).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, x) in w.iter().enumerate() {
        u -= x;
        if u < 0.0 {
            return i as u32;
        }
    }
    (w.len() - 1) as u32
}

/// `length` tokens after `prefix` (read after a line separator), as text. Prefix tokens must be
/// in the vocabulary (an error names the setting `prefix` and the character or word).
pub fn sample_text(
    lm: &dyn IncrementalLm,
    tok: &Tokenizer,
    prefix: &str,
    length: usize,
    temperature: f64,
    rng: &mut ChaCha8Rng,
) -> Result<String> {
    let mut context = vec![separator(tok)?];
    // BPE covers every byte; character and word vocabularies refuse what they lack.
    let prefix_ids = match tok.kind() {
        TokenizerKind::Bpe => tok.encode(prefix).map_err(|e| e.to_string()),
        _ => VocabTokenizer(tok).encode_literal(prefix),
    };
    context.extend(prefix_ids.map_err(|e| ExperimentError::Setting {
        field: "prefix".into(),
        source: e.into(),
    })?);
    let v = lm.vocab_size();
    let mut state = lm.initial_state(1);
    let mut lp = vec![0.0f32; v];
    for &t in &context {
        lm.step(&mut state, &[t], &mut lp);
    }
    let mut out = Vec::with_capacity(length);
    for i in 0..length {
        let t = draw(&lp, temperature, rng);
        out.push(t);
        if i + 1 < length {
            lm.step(&mut state, &[t], &mut lp);
        }
    }
    let cont = tok.decode(&out)?;
    Ok(match tok.kind() {
        TokenizerKind::Word if !prefix.trim().is_empty() && !cont.starts_with('\n') => {
            format!("{} {cont}", prefix.trim_end())
        }
        _ => format!("{prefix}{cont}"),
    })
}

/// Refuse samples that cannot fit in memory before allocating them: every sample is held whole
/// (token ids, 4 bytes each, then at least one byte of text per token, then the joined output),
/// so 6 bytes per token is a lower bound. A length of 100000000000 used to abort in the
/// allocator.
fn check_sample_memory(length: usize, count: usize) -> Result<()> {
    const BYTES_PER_TOKEN: u64 = 6;
    let needed = (length as u64)
        .saturating_mul(count as u64)
        .saturating_mul(BYTES_PER_TOKEN);
    memory::check_fits(
        &format!("{count} sample(s) of {length} tokens"),
        needed,
        memory::available_bytes(),
    )
    .or_else(|e| {
        invalid(
            "length",
            length,
            format!("{e}; ask for fewer or shorter samples"),
        )
    })
}

/// Draw `cfg.count` samples from the newest checkpoint of `cfg.run`.
pub fn run(cfg: &SampleConfig, _observer: &mut dyn Observer) -> Result<SampleResult> {
    cfg.validate()?;
    check_sample_memory(cfg.length, cfg.count)?;
    let (saved, lm, tok) = load_lm(&cfg.run)?;
    let seed = cfg.seed.unwrap_or_else(|| rand::rng().random());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let samples = (0..cfg.count)
        .map(|_| {
            sample_text(
                lm.as_ref(),
                &tok,
                &cfg.prefix,
                cfg.length,
                cfg.temperature,
                &mut rng,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SampleResult {
        run: cfg.run.display().to_string(),
        step: saved.checkpoint.state.step,
        prefix: cfg.prefix.clone(),
        length: cfg.length,
        temperature: Num(cfg.temperature),
        seed,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_takes_the_most_likely_token_and_impossible_tokens_are_never_drawn() {
        let lp = [-3.0f32, -0.2, f32::NEG_INFINITY, -1.7];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(draw(&lp, 0.0, &mut rng), 1);
        // exp(-inf) is 0: token 2 has no weight at any temperature.
        for t in [0.5, 1.0, 4.0] {
            for _ in 0..500 {
                assert_ne!(draw(&lp, t, &mut rng), 2, "temperature {t}");
            }
        }
    }

    #[test]
    fn the_config_refuses_settings_out_of_range_naming_them() {
        let ok = SampleConfig {
            run: "r".into(),
            ..SampleConfig::default()
        };
        assert!(ok.validate().is_ok());
        for (cfg, starts) in [
            (
                SampleConfig {
                    temperature: f64::NAN,
                    ..ok.clone()
                },
                "temperature NaN: ",
            ),
            (
                SampleConfig {
                    length: 0,
                    ..ok.clone()
                },
                "length 0: ",
            ),
            (
                SampleConfig {
                    count: 0,
                    ..ok.clone()
                },
                "count 0: ",
            ),
            (SampleConfig::default(), "run \"\": "),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.starts_with(starts), "{e}");
        }
    }
}
