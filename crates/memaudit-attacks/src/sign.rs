//! Sign encoding (Song, Ristenpart, Shmatikov, "Machine Learning Models that Remember Too Much",
//! CCS 2017, attack C; the authors' `attack.py::sign_term`, `get_binary_secret`): the secret's
//! bits, MSB-first, become target signs `s_i ∈ {-1, +1}` (bit 0 -> -1, bit 1 -> +1) of the
//! selected weights; the malicious regulariser `P(θ, s) = λ mean_i max(0, -s_i θ_i)` penalises
//! wrong signs; the decoder reads `bit_i = θ_i > 0` and packs the bits MSB-first.

use memaudit_engine::params::ParamSpec;
use memaudit_engine::penalty::ParamPenalty;

use crate::bits::bits_to_bytes;
use crate::error::{AttackError, Result, check_lambda};
use crate::secret::{ImageSecret, TextDecode, TextSecret};
use crate::selection::{ParamSelection, SelectionRule};

/// The sign-encoding regulariser, pluggable into training as a [`ParamPenalty`].
///
/// Value `λ/ℓ Σ_i max(0, -s_i θ_i)` over the ℓ selected weights. Subgradient: `-λ s_i / ℓ`
/// where `s_i θ_i <= 0` and 0 elsewhere. At `θ_i = 0` (the kink) we take the one-sided
/// derivative that moves θ_i towards its target sign, because the decoder reads 0 as bit 0 and
/// a weight stuck at 0 would decode a 1-bit wrongly.
#[derive(Clone, Debug)]
pub struct SignPenalty {
    lambda: f64,
    selection: ParamSelection,
    /// `true` = target sign +1.
    bits: Vec<bool>,
}

impl SignPenalty {
    /// Penalty encoding `bits` (one per selected weight). Errors: negative or non-finite λ, an
    /// empty secret, more bits than the selection's capacity (says how many fit).
    pub fn new(
        specs: &[ParamSpec],
        bits: &[bool],
        lambda: f64,
        rule: SelectionRule,
    ) -> Result<Self> {
        check_lambda("sign encoding", lambda)?;
        let selection = ParamSelection::select(specs, bits.len(), "bits", rule)?;
        debug_assert_eq!(selection.len(), bits.len());
        Ok(SignPenalty {
            lambda,
            selection,
            bits: bits.to_vec(),
        })
    }

    /// Penalty encoding the pixels of `secret` (8 bits each), authors' selection rule. To encode
    /// as many images as fit, take [`sign_capacity_images`] of them.
    pub fn for_images(specs: &[ParamSpec], secret: &ImageSecret, lambda: f64) -> Result<Self> {
        SignPenalty::new(specs, &secret.to_bits(), lambda, SelectionRule::default())
    }

    /// Penalty encoding documents as fixed-width word indices ([`TextSecret::to_bits`]). For a
    /// bag-of-words logistic regression the single weight matrix carries the bits.
    pub fn for_text(
        specs: &[ParamSpec],
        secret: &TextSecret,
        lambda: f64,
        rule: SelectionRule,
    ) -> Result<Self> {
        SignPenalty::new(specs, &secret.to_bits(), lambda, rule)
    }

    pub fn lambda(&self) -> f64 {
        self.lambda
    }
    pub fn selection(&self) -> &ParamSelection {
        &self.selection
    }
    pub fn bits(&self) -> &[bool] {
        &self.bits
    }

    /// The authors' logged `correct_sign`: fraction of selected weights with `s_i θ_i > 0`.
    pub fn correct_sign(&self, params: &[f32]) -> Result<f64> {
        let theta = self.selection.gather(params)?;
        let correct = theta
            .iter()
            .zip(&self.bits)
            .filter(|&(&t, &b)| target(b) * f64::from(t) > 0.0)
            .count();
        Ok(correct as f64 / theta.len() as f64)
    }

    /// Value and subgradient with respect to the gathered θ (in secret order), in f64.
    pub(crate) fn value_and_grad_f64(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let scale = self.lambda / theta.len() as f64;
        let mut total = 0.0;
        for ((g, &t), &bit) in grad.iter_mut().zip(theta).zip(&self.bits) {
            let s = target(bit);
            let violation = -s * t;
            *g = if violation >= 0.0 { -scale * s } else { 0.0 };
            total += violation.max(0.0);
        }
        scale * total
    }
}

fn target(bit: bool) -> f64 {
    if bit { 1.0 } else { -1.0 }
}

impl ParamPenalty for SignPenalty {
    fn name(&self) -> &str {
        "sign_encoding"
    }

    fn value_and_grad(&self, params: &[f32], grad: &mut [f32]) -> f64 {
        self.selection
            .penalty_f64(params, grad, |theta, g| self.value_and_grad_f64(theta, g))
    }
}

/// How many whole `height x width` 8-bit images sign encoding can carry with the authors'
/// selection (one bit per weight).
pub fn sign_capacity_images(specs: &[ParamSpec], height: usize, width: usize) -> usize {
    SelectionRule::default().capacity(specs) / (8 * height * width).max(1)
}

/// Reads the selected weights' signs: bit = `θ > 0` (0 and negative read as 0), in secret order.
pub fn decode_sign_bits(params: &[f32], selection: &ParamSelection) -> Result<Vec<bool>> {
    Ok(selection
        .gather(params)?
        .into_iter()
        .map(|t| t > 0.0)
        .collect())
}

/// Decodes `n` images of `height x width` from the signs (needs `n*height*width*8` selected
/// weights).
pub fn decode_sign_images(
    params: &[f32],
    selection: &ParamSelection,
    n: usize,
    height: usize,
    width: usize,
) -> Result<ImageSecret> {
    let bits = decode_sign_bits(params, selection)?;
    let needed = n * height * width * 8;
    if bits.len() < needed {
        return Err(AttackError::LengthMismatch {
            context: format!("sign decoding of {n} images of {height}x{width}"),
            what: "selected weights (at least)",
            expected: needed,
            found: bits.len(),
        });
    }
    ImageSecret::new(n, height, width, bits_to_bytes(&bits[..needed]))
}

/// Decodes documents from the signs (see [`TextSecret::from_bits`] for how corruption is handled).
pub fn decode_sign_text(
    params: &[f32],
    selection: &ParamSelection,
    vocab_size: u32,
) -> Result<TextDecode> {
    TextSecret::from_bits(vocab_size, &decode_sign_bits(params, selection)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::bit_errors;
    use crate::metrics::{corpus_word_precision_recall, score_images, word_precision_recall};
    use crate::selection::tests::{resnet32_specs, specs_from};
    use memaudit_engine::params::{ParamKind, total_len};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Parameters that satisfy the penalty: every selected weight has its target sign with a
    /// random magnitude; unselected parameters are random.
    fn satisfying_params(penalty: &SignPenalty, n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut params: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        for (index, &bit) in penalty.selection().indices().zip(penalty.bits()) {
            let magnitude = rng.random_range(1e-6f32..0.5);
            params[index] = if bit { magnitude } else { -magnitude };
        }
        params
    }

    #[test]
    fn image_round_trip_is_exact_when_the_penalty_is_satisfied() {
        let specs = resnet32_specs();
        let n = total_len(&specs);
        // the authors' capacity: 56 CIFAR-sized images
        assert_eq!(sign_capacity_images(&specs, 32, 32), 56);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let secret =
            ImageSecret::new(56, 32, 32, (0..56 * 1024).map(|_| rng.random()).collect()).unwrap();
        let penalty = SignPenalty::for_images(&specs, &secret, 10.0).unwrap();
        let params = satisfying_params(&penalty, n, &mut rng);
        let mut grad = vec![0.0f32; n];
        assert_eq!(penalty.value_and_grad(&params, &mut grad), 0.0);
        assert!(grad.iter().all(|&g| g == 0.0));
        assert_eq!(penalty.correct_sign(&params).unwrap(), 1.0);
        let decoded = decode_sign_images(&params, penalty.selection(), 56, 32, 32).unwrap();
        assert_eq!(decoded, secret);
        // one more image than fits is refused, saying how many bits fit
        let too_many = ImageSecret::new(57, 32, 32, vec![0; 57 * 1024]).unwrap();
        let err = SignPenalty::for_images(&specs, &too_many, 10.0).unwrap_err();
        assert!(err.to_string().contains("at most 464432 bits"), "{err}");
    }

    #[test]
    fn wrong_signs_cost_what_the_formula_says_and_decode_locally_wrong() {
        let specs = specs_from(&[
            ("w", &[2, 4], ParamKind::Weight),
            ("b", &[2], ParamKind::Bias),
        ]);
        let bits = [true, false, true, true, false, false, true, false];
        let penalty = SignPenalty::new(&specs, &bits, 4.0, SelectionRule::default()).unwrap();
        // weights 0 and 1 have the wrong sign (-0.5 for +1, 0.25 for -1), weight 2 is 0
        let params = [-0.5f32, 0.25, 0.0, 0.1, -0.1, -0.2, 0.3, -0.4, 9.0, 9.0];
        let mut grad = vec![0.0f32; 10];
        let value = penalty.value_and_grad(&params, &mut grad);
        // λ/ℓ (0.5 + 0.25 + 0) = 4/8 * 0.75
        assert_eq!(value, 0.375);
        assert_eq!(&grad[..3], &[-0.5, 0.5, -0.5]);
        assert!(grad[3..].iter().all(|&g| g == 0.0));
        assert_eq!(penalty.correct_sign(&params).unwrap(), 5.0 / 8.0);
        let decoded = decode_sign_bits(&params, penalty.selection()).unwrap();
        assert_eq!(bit_errors(&decoded, &bits), 3);
    }

    #[test]
    fn subgradient_matches_central_differences_away_from_kinks() {
        // The penalty is piecewise linear; with |θ_i| >= 1e-2 and h = 1e-6 no kink is crossed, so
        // central differences are exact up to f64 rounding (~1e-10 here); we allow 1e-8.
        let specs = specs_from(&[("w", &[3, 5], ParamKind::Weight)]);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let bits: Vec<bool> = (0..15).map(|_| rng.random()).collect();
        let penalty = SignPenalty::new(&specs, &bits, 2.5, SelectionRule::default()).unwrap();
        let theta: Vec<f64> = (0..15)
            .map(|_| {
                let m = rng.random_range(1e-2..1.0);
                if rng.random() { m } else { -m }
            })
            .collect();
        let mut grad = vec![0.0; 15];
        penalty.value_and_grad_f64(&theta, &mut grad);
        assert!(
            grad.iter().any(|&g| g != 0.0) && grad.contains(&0.0),
            "test must hit both pieces"
        );
        let h = 1e-6;
        for j in 0..15 {
            let mut scratch = vec![0.0; 15];
            let (mut plus, mut minus) = (theta.clone(), theta.clone());
            plus[j] += h;
            minus[j] -= h;
            let numeric = (penalty.value_and_grad_f64(&plus, &mut scratch)
                - penalty.value_and_grad_f64(&minus, &mut scratch))
                / (2.0 * h);
            assert!(
                (numeric - grad[j]).abs() < 1e-8,
                "j={j}: {numeric} vs {}",
                grad[j]
            );
        }
    }

    #[test]
    fn subgradient_descent_reaches_the_encoding() {
        let specs = specs_from(&[("w", &[16, 16], ParamKind::Weight)]);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let secret = ImageSecret::new(2, 4, 4, (0..32).map(|_| rng.random()).collect()).unwrap();
        let penalty = SignPenalty::for_images(&specs, &secret, 1.0).unwrap();
        let mut params: Vec<f32> = (0..256).map(|_| rng.random_range(-0.01..0.01)).collect();
        assert!(penalty.correct_sign(&params).unwrap() < 0.7);
        for _ in 0..20 {
            let mut grad = vec![0.0f32; 256];
            penalty.value_and_grad(&params, &mut grad);
            params
                .iter_mut()
                .zip(&grad)
                .for_each(|(p, g)| *p -= 1.0 * g);
        }
        assert_eq!(penalty.correct_sign(&params).unwrap(), 1.0);
        let decoded = decode_sign_images(&params, penalty.selection(), 2, 4, 4).unwrap();
        assert_eq!(score_images(&secret, &decoded).unwrap().mean_mape, 0.0);
    }

    #[test]
    fn text_documents_round_trip_through_a_bag_of_words_weight() {
        // IMDB-sized logistic regression: one 2 x 10^5 weight matrix and a bias.
        let specs = specs_from(&[
            ("lr.w", &[2, 100_000], ParamKind::Weight),
            ("lr.b", &[2], ParamKind::Bias),
        ]);
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let docs: Vec<Vec<u32>> = (0..40)
            .map(|_| {
                (0..rng.random_range(20..120))
                    .map(|_| rng.random_range(0..100_000))
                    .collect()
            })
            .collect();
        let text = TextSecret::new(100_000, docs).unwrap().unique_words();
        let penalty = SignPenalty::for_text(&specs, &text, 1.0, SelectionRule::default()).unwrap();
        assert_eq!(penalty.selection().len() as u64, text.bit_len());
        let mut params = satisfying_params(&penalty, 200_002, &mut rng);
        let decoded = decode_sign_text(&params, penalty.selection(), 100_000).unwrap();
        assert_eq!(decoded.secret, text);
        let pr = word_precision_recall(&text, &decoded.secret);
        assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
        // Flip the signs of 1% of the selected weights (without repetition). A 17-bit word survives
        // with probability 0.99^17 = 0.84, so corpus-level precision and recall should be near
        // 0.84; we allow down to 0.75 (the spread over 4,000 words is about 0.01).
        let indices: Vec<usize> = penalty.selection().indices().collect();
        for k in rand::seq::index::sample(&mut rng, indices.len(), indices.len() / 100) {
            params[indices[k]] = -params[indices[k]];
        }
        let noisy = decode_sign_text(&params, penalty.selection(), 100_000).unwrap();
        let corpus = corpus_word_precision_recall(&text, &noisy.secret);
        assert!(corpus.precision < 1.0 && corpus.recall < 1.0);
        assert!(
            corpus.precision > 0.75 && corpus.recall > 0.75,
            "{corpus:?}"
        );
        let aligned = word_precision_recall(&text, &noisy.secret);
        assert!(aligned.true_positives <= corpus.true_positives);
    }
}
