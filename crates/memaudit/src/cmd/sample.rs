//! `memaudit sample`: text from a saved language model, one token at a time through its
//! incremental inference (the same `IncrementalLm` the exposure scorer uses).

use std::path::PathBuf;

use anyhow::Result;
use memaudit_audit::CanaryTokenizer;
use memaudit_data::{Tokenizer, TokenizerKind};
use memaudit_engine::IncrementalLm;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::secret_sharer::{VocabTokenizer, separator};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder of a language model (`memaudit train` on text, `memaudit secret-sharer`).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Text the sample continues (default: the start of a line).
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub prefix: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub length: usize,
    /// Softmax temperature: p ~ exp(log p / T); 0 always takes the most likely token.
    #[arg(long, default_value_t = 0.8, value_name = "T")]
    pub temperature: f64,
    /// Seed of the draws (default: drawn at random and reported).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Independent samples.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub count: usize,
}

/// The incremental LM and tokenizer of a saved run, or an error saying why it is not one (the
/// experiments library's).
pub use memaudit_experiments::saved_run::load_lm;

/// Draw a token from natural-log probabilities at a temperature (0: argmax).
fn draw(log_probs: &[f32], temperature: f64, rng: &mut ChaCha8Rng) -> u32 {
    if temperature == 0.0 {
        return log_probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32);
    }
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
/// in the vocabulary (an error names the character or word).
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
    context.extend(prefix_ids.map_err(|e| user(format!("--prefix: {e}")))?);
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
/// so 6 bytes per token is a lower bound. `--length 100000000000` used to abort in the allocator.
fn check_sample_memory(length: usize, count: usize) -> Result<()> {
    use memaudit_engine::memory;
    const BYTES_PER_TOKEN: u64 = 6;
    let needed = (length as u64)
        .saturating_mul(count as u64)
        .saturating_mul(BYTES_PER_TOKEN);
    memory::check_fits(
        &format!("{count} sample(s) of {length} tokens"),
        needed,
        memory::available_bytes(),
    )
    .map_err(|e| {
        user(format!(
            "--length {length}: {e}; ask for fewer tokens (--length, --count)"
        ))
    })
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(user(format!(
            "--temperature must be >= 0 and finite, got {}",
            args.temperature
        )));
    }
    if args.length == 0 || args.count == 0 {
        return Err(user("--length and --count must be at least 1"));
    }
    check_sample_memory(args.length, args.count)?;
    let (saved, lm, tok) = load_lm(&args.run)?;
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut samples = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        samples.push(sample_text(
            lm.as_ref(),
            &tok,
            &args.prefix,
            args.length,
            args.temperature,
            &mut rng,
        )?);
    }
    if args.seed.is_none() {
        ctx.note(format!(
            "seed {seed} (pass --seed {seed} to draw the same text)"
        ));
    }
    let text = samples.join("\n\n----\n\n");
    Ok(Report::new(
        text,
        json!({
            "run": args.run.display().to_string(),
            "step": saved.checkpoint.state.step,
            "prefix": args.prefix,
            "length": args.length,
            "temperature": num(args.temperature),
            "seed": seed,
            "samples": samples,
        }),
    ))
}
