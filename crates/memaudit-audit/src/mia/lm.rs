//! Reference-free membership baselines for language models, as pure functions of one example's
//! per-token log-probabilities under the target model (natural log) and, for zlib, its text.
//! All return "higher = member".
//!
//! - loss: the mean token log-probability (minus the LM loss; Yeom et al. 2018 on sequences).
//! - zlib ratio (Carlini et al., "Extracting Training Data from Large Language Models", 2021):
//!   log-perplexity divided by the zlib-compressed length of the text in bytes; text the model
//!   finds much easier than a generic compressor does is suspicious. Score = -ratio.
//! - Min-K% probability (Shi et al., "Detecting Pretraining Data from Large Language Models",
//!   ICLR 2024): the mean of the k% lowest token log-probabilities (at least one token); members
//!   have fewer very unlikely tokens.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

/// Mean token log-probability (-loss). NaN for an empty sequence.
pub fn loss_score(token_logprobs: &[f64]) -> f64 {
    token_logprobs.iter().sum::<f64>() / token_logprobs.len() as f64
}

/// Bytes of `text` after zlib at the default level (Python's `zlib.compress(text)` gives the same
/// length: both are zlib with level 6).
pub fn zlib_len(text: &[u8]) -> usize {
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(text)
        .and_then(|_| enc.finish())
        .map(|v| v.len())
        // Writing into a Vec cannot fail.
        .unwrap_or(usize::MAX)
}

/// -(log-perplexity / zlib length): higher = member.
pub fn zlib_ratio_score(token_logprobs: &[f64], text: &[u8]) -> f64 {
    let log_perplexity = -loss_score(token_logprobs);
    -log_perplexity / zlib_len(text) as f64
}

/// Mean of the ceil(k x L) lowest token log-probabilities (at least one).
pub fn min_k_score(token_logprobs: &[f64], k_fraction: f64) -> f64 {
    let mut v = token_logprobs.to_vec();
    v.sort_by(f64::total_cmp);
    let take = ((k_fraction * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v[..take.min(v.len())].iter().sum::<f64>() / take as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_k_averages_the_lowest_tokens() {
        let lp = [-0.1, -5.0, -0.2, -3.0, -0.3];
        // 20% of 5 tokens = 1 token: the lowest.
        assert_eq!(min_k_score(&lp, 0.2), -5.0);
        // 50% -> ceil(2.5) = 3 tokens: -5, -3, -0.3.
        assert!((min_k_score(&lp, 0.5) - (-8.3 / 3.0)).abs() < 1e-12);
        assert!((min_k_score(&lp, 1.0) - loss_score(&lp)).abs() < 1e-12);
    }

    #[test]
    fn zlib_ratio_favours_text_the_model_finds_easier_than_zlib_does() {
        let repetitive = b"abababababababababababababababab";
        let varied = b"the quick brown fox jumps over a";
        assert!(zlib_len(repetitive) < zlib_len(varied));
        // Same model loss: the varied text (harder for zlib) gets the higher member score.
        let lp = [-1.0; 8];
        assert!(zlib_ratio_score(&lp, varied) > zlib_ratio_score(&lp, repetitive));
        // Python 3: len(zlib.compress(b"hello hello hello hello")) == 16.
        assert_eq!(zlib_len(b"hello hello hello hello"), 16);
    }
}
