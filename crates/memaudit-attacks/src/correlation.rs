//! Correlated value encoding (Song, Ristenpart, Shmatikov, "Machine Learning Models that Remember
//! Too Much", CCS 2017, attack B; the authors' `attack.py::corr_term`): a malicious regulariser
//! `C(θ, s) = -λ |r(θ, s)|`, with `r` the Pearson correlation between the selected weights θ and
//! the secret values s (gray pixels), drives the weights to a linear image of the secret; the
//! decoder min-max rescales the weights to 0..=255 and tries the image and its inverse.

use memaudit_engine::params::ParamSpec;
use memaudit_engine::penalty::ParamPenalty;
use serde::Serialize;

use crate::error::{AttackError, Result, check_lambda};
use crate::metrics::{ImageScores, score_images};
use crate::secret::ImageSecret;
use crate::selection::{ParamSelection, SelectionRule};

/// The correlated-value-encoding regulariser, pluggable into training as a [`ParamPenalty`].
///
/// Value `-λ |r|` with `r = Σ a_i b_i / sqrt(Σ a_i² Σ b_i²)`, `a = θ - mean(θ)`,
/// `b = s - mean(s)`, over the ℓ selected parameters. Gradient (b sums to zero):
/// `∂r/∂θ_j = b_j / (‖a‖ ‖b‖) - r a_j / ‖a‖²`, and `∂C/∂θ_j = -λ sign(r) ∂r/∂θ_j` with
/// `sign(0) = +1` (any direction increases |r| from 0; this one is deterministic). When all
/// selected weights are equal (‖a‖ = 0) r is undefined: the penalty is 0 and adds no gradient
/// (trained weights are never exactly constant; a constant initialisation is the trainer's bug).
/// Everything is computed in f64.
#[derive(Clone, Debug)]
pub struct CorrelationPenalty {
    lambda: f64,
    selection: ParamSelection,
    /// `b = s - mean(s)` over the ℓ selected positions.
    centered_secret: Vec<f64>,
    secret_norm: f64,
}

impl CorrelationPenalty {
    /// Penalty correlating the selected weights with `secret_values` (one value per weight; at
    /// most the selection's capacity). Errors: negative or non-finite λ, a secret longer than the
    /// capacity (says how many values fit), a constant secret (no correlation to maximise).
    pub fn new(
        specs: &[ParamSpec],
        secret_values: &[f64],
        lambda: f64,
        rule: SelectionRule,
    ) -> Result<Self> {
        check_lambda("correlated value encoding", lambda)?;
        if let Some(i) = secret_values.iter().position(|v| !v.is_finite()) {
            return Err(AttackError::InvalidSecret(format!(
                "secret value {i} is {}",
                secret_values[i]
            )));
        }
        let selection = ParamSelection::select(specs, secret_values.len(), "values", rule)?;
        let s = &secret_values[..selection.len()];
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        let centered_secret: Vec<f64> = s.iter().map(|v| v - mean).collect();
        let secret_norm = centered_secret.iter().map(|b| b * b).sum::<f64>().sqrt();
        if secret_norm == 0.0 {
            return Err(AttackError::InvalidSecret(
                "all secret values are equal, so their Pearson correlation with the weights is undefined".into(),
            ));
        }
        Ok(CorrelationPenalty {
            lambda,
            selection,
            centered_secret,
            secret_norm,
        })
    }

    /// Penalty encoding the pixels of `secret`, with the authors' selection rule. To encode as
    /// many images as fit, take [`correlation_capacity_images`] of them.
    pub fn for_images(specs: &[ParamSpec], secret: &ImageSecret, lambda: f64) -> Result<Self> {
        CorrelationPenalty::new(specs, &secret.values(), lambda, SelectionRule::default())
    }

    pub fn lambda(&self) -> f64 {
        self.lambda
    }
    pub fn selection(&self) -> &ParamSelection {
        &self.selection
    }

    /// Pearson r between the selected weights and the secret (0 when the weights are constant).
    pub fn pearson(&self, params: &[f32]) -> Result<f64> {
        let theta: Vec<f64> = self
            .selection
            .gather(params)?
            .into_iter()
            .map(f64::from)
            .collect();
        Ok(self.pearson_f64(&theta).0)
    }

    /// (r, ‖a‖², centered θ) on the gathered θ.
    fn pearson_f64(&self, theta: &[f64]) -> (f64, f64, Vec<f64>) {
        let mean = theta.iter().sum::<f64>() / theta.len() as f64;
        let a: Vec<f64> = theta.iter().map(|t| t - mean).collect();
        let saa: f64 = a.iter().map(|x| x * x).sum();
        if saa == 0.0 {
            return (0.0, 0.0, a);
        }
        let sab: f64 = a
            .iter()
            .zip(&self.centered_secret)
            .map(|(x, b)| x * b)
            .sum();
        (sab / (saa.sqrt() * self.secret_norm), saa, a)
    }

    /// Value and gradient with respect to the gathered θ (in secret order), in f64.
    pub(crate) fn value_and_grad_f64(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (r, saa, a) = self.pearson_f64(theta);
        if saa == 0.0 {
            grad.iter_mut().for_each(|g| *g = 0.0);
            return 0.0;
        }
        let sign = if r < 0.0 { -1.0 } else { 1.0 };
        let inv_norms = 1.0 / (saa.sqrt() * self.secret_norm);
        for ((g, &b), &a) in grad.iter_mut().zip(&self.centered_secret).zip(&a) {
            *g = -self.lambda * sign * (b * inv_norms - r * a / saa);
        }
        -self.lambda * r.abs()
    }
}

impl ParamPenalty for CorrelationPenalty {
    fn name(&self) -> &str {
        "correlated_value_encoding"
    }

    fn value_and_grad(&self, params: &[f32], grad: &mut [f32]) -> f64 {
        self.selection
            .penalty_f64(params, grad, |theta, g| self.value_and_grad_f64(theta, g))
    }
}

/// How many whole `height x width` images the authors' selection can carry (one weight per
/// pixel).
pub fn correlation_capacity_images(specs: &[ParamSpec], height: usize, width: usize) -> usize {
    SelectionRule::default().capacity(specs) / (height * width).max(1)
}

/// Reads the selected weights back as images: the first `ℓ / (height*width)` whole images of
/// the selection, each min-max rescaled to 0..=255 and truncated to u8 as the authors do
/// (`(x - min) / (max - min) * 255`, cast). A constant image decodes as all zeros.
pub fn decode_correlation_images(
    params: &[f32],
    selection: &ParamSelection,
    height: usize,
    width: usize,
) -> Result<ImageSecret> {
    let image_len = height * width;
    let n = selection.len().checked_div(image_len).unwrap_or(0);
    if n == 0 {
        return Err(AttackError::InvalidSecret(format!(
            "the selection carries {} values, fewer than one {height}x{width} image",
            selection.len()
        )));
    }
    let theta = selection.gather(params)?;
    let mut pixels = Vec::with_capacity(n * image_len);
    for image in theta[..n * image_len].chunks(image_len) {
        let (lo, hi) = image
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(f64::from(v)), hi.max(f64::from(v)))
            });
        for &v in image {
            let unit = if hi > lo {
                (f64::from(v) - lo) / (hi - lo)
            } else {
                0.0
            };
            // truncation, as numpy's astype(uint8); unit is in [0, 1] so this is in 0..=255
            pixels.push((unit * 255.0) as u8);
        }
    }
    ImageSecret::new(n, height, width, pixels)
}

/// The inverse image `255 - x` (the sign of the correlation is unknown to the decoder).
pub fn invert(images: &ImageSecret) -> ImageSecret {
    let pixels = images.pixels().iter().map(|&p| 255 - p).collect();
    ImageSecret::new(images.n_images(), images.height(), images.width(), pixels)
        .expect("same shape as a valid secret")
}

/// Scores of a correlated-value decoding against the original images.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorrelationScores {
    /// Per image, the orientation (image or inverse) with the lower MAPE, as the authors'
    /// `test_cor_reconstruction` does (it looks at the original, so it is an upper bound on
    /// what an attacker achieves).
    pub best_of_two: ImageScores,
    /// Which images scored better inverted.
    pub inverted: Vec<bool>,
    /// One orientation for all images (the one with the lower mean MAPE): the penalty maximises
    /// |r| over all images at once, so a single sign holds for all and one guess (one bit of
    /// side information) suffices for the attacker.
    pub global: ImageScores,
    pub global_inverted: bool,
    /// The decoded images in the per-image best orientation (for the image grid).
    #[serde(skip)]
    pub best_images: ImageSecret,
}

/// Scores decoded images (from [`decode_correlation_images`]) against the first
/// `decoded.n_images()` originals. Minimum MAPE and maximum |cosine| over the image and its
/// inverse, as the authors' evaluation.
pub fn score_correlation_decoding(
    decoded: &ImageSecret,
    originals: &ImageSecret,
) -> Result<CorrelationScores> {
    originals.check_same_size(decoded, "correlated value decoding")?;
    if decoded.n_images() > originals.n_images() {
        return Err(AttackError::LengthMismatch {
            context: "correlated value decoding: originals to compare with".into(),
            what: "images (at least)",
            expected: decoded.n_images(),
            found: originals.n_images(),
        });
    }
    let originals = originals.first(decoded.n_images())?;
    let inverse = invert(decoded);
    let plain = score_images(&originals, decoded)?;
    let inv = score_images(&originals, &inverse)?;
    let n = decoded.n_images();
    let mut best = ImageScores {
        mape: Vec::with_capacity(n),
        cosine: Vec::with_capacity(n),
        mean_mape: 0.0,
        mean_cosine: 0.0,
    };
    let mut inverted = Vec::with_capacity(n);
    let mut best_pixels = Vec::with_capacity(decoded.pixels().len());
    for i in 0..n {
        let use_inverse = inv.mape[i] < plain.mape[i];
        inverted.push(use_inverse);
        best.mape.push(plain.mape[i].min(inv.mape[i]));
        best.cosine.push(plain.cosine[i].max(inv.cosine[i]));
        best_pixels.extend_from_slice(if use_inverse {
            inverse.image(i)
        } else {
            decoded.image(i)
        });
    }
    best.mean_mape = best.mape.iter().sum::<f64>() / n as f64;
    best.mean_cosine = best.cosine.iter().sum::<f64>() / n as f64;
    let global_inverted = inv.mean_mape < plain.mean_mape;
    Ok(CorrelationScores {
        best_of_two: best,
        inverted,
        global: if global_inverted { inv } else { plain },
        global_inverted,
        best_images: ImageSecret::new(n, decoded.height(), decoded.width(), best_pixels)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::tests::specs_from;
    use memaudit_engine::params::{ParamKind, total_len};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn small_specs() -> Vec<ParamSpec> {
        specs_from(&[
            ("conv.w", &[2, 1, 2, 2], ParamKind::Weight),
            ("conv.b", &[2], ParamKind::Bias),
            ("dense.w", &[4, 3], ParamKind::Weight),
            ("dense.b", &[3], ParamKind::Bias),
        ])
    }

    #[test]
    fn gradient_matches_central_differences() {
        // f64 central differences with h = 1e-6 on values of order 1: truncation error ~h² and
        // rounding ~1e-16/h, so analytic and numeric agree to ~1e-9; we allow 1e-7.
        let specs = small_specs();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let secret: Vec<f64> = (0..18)
            .map(|_| f64::from(rng.random_range(0u8..=255)))
            .collect();
        for lambda in [0.5, 3.0] {
            let penalty =
                CorrelationPenalty::new(&specs, &secret, lambda, SelectionRule::default()).unwrap();
            assert_eq!(penalty.selection().len(), 18);
            for trial in 0..4 {
                let mut theta: Vec<f64> = (0..18).map(|_| rng.random_range(-1.0..1.0)).collect();
                if trial % 2 == 1 {
                    // a negatively correlated point exercises sign(r) = -1
                    for (t, s) in theta.iter_mut().zip(&secret) {
                        *t -= s / 255.0;
                    }
                }
                let mut grad = vec![0.0; 18];
                penalty.value_and_grad_f64(&theta, &mut grad);
                let h = 1e-6;
                for j in 0..18 {
                    let mut scratch = vec![0.0; 18];
                    let mut plus = theta.clone();
                    plus[j] += h;
                    let mut minus = theta.clone();
                    minus[j] -= h;
                    let numeric = (penalty.value_and_grad_f64(&plus, &mut scratch)
                        - penalty.value_and_grad_f64(&minus, &mut scratch))
                        / (2.0 * h);
                    assert!(
                        (numeric - grad[j]).abs() < 1e-7,
                        "j={j}: numeric {numeric}, analytic {}",
                        grad[j]
                    );
                }
            }
        }
    }

    #[test]
    fn trait_adds_gradient_only_to_selected_weights() {
        let specs = small_specs();
        let n = total_len(&specs);
        let secret: Vec<f64> = (0..10).map(|i| f64::from(i * i)).collect();
        let penalty =
            CorrelationPenalty::new(&specs, &secret, 2.0, SelectionRule::default()).unwrap();
        let params: Vec<f32> = (0..n).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let mut grad = vec![1.0f32; n];
        let value = penalty.value_and_grad(&params, &mut grad);
        // selection: conv.w (0..8) and the first 2 weights of dense.w (10..12)
        let theta: Vec<f64> = [0, 1, 2, 3, 4, 5, 6, 7, 10, 11]
            .iter()
            .map(|&i| f64::from(params[i]))
            .collect();
        let mut expect = vec![0.0; 10];
        let expect_value = penalty.value_and_grad_f64(&theta, &mut expect);
        assert_eq!(value, expect_value);
        assert!((value + 2.0 * penalty.pearson(&params).unwrap().abs()).abs() < 1e-12);
        for (k, &i) in [0, 1, 2, 3, 4, 5, 6, 7, 10, 11].iter().enumerate() {
            assert_eq!(grad[i], 1.0 + expect[k] as f32);
        }
        for i in [8, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22] {
            assert_eq!(grad[i], 1.0, "index {i} is not selected");
        }
    }

    #[test]
    fn gradient_ascent_on_r_encodes_and_decodes_images() {
        // Following the penalty's gradient alone (no task loss) must make |r| -> 1; at r = 1 the
        // weights are an affine image of the pixels and the min-max decoder is exact up to the
        // u8 truncation of the rescaling (at most 1 grey level), for images that span 0..=255
        // (min-max rescaling cannot know an image's own contrast; MNIST digits do span it).
        let specs = specs_from(&[
            ("w", &[8, 8], ParamKind::Weight),
            ("b", &[8], ParamKind::Bias),
        ]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut pixels: Vec<u8> = (0..64).map(|_| rng.random_range(0u8..=255)).collect();
        for image in pixels.chunks_mut(16) {
            image[0] = 0;
            image[15] = 255;
        }
        let secret = ImageSecret::new(4, 4, 4, pixels).unwrap();
        assert_eq!(correlation_capacity_images(&specs, 4, 4), 4);
        let penalty = CorrelationPenalty::for_images(&specs, &secret, 1.0).unwrap();
        let mut params: Vec<f32> = (0..72).map(|_| rng.random_range(-0.1..0.1)).collect();
        let start = penalty.pearson(&params).unwrap().abs();
        for _ in 0..2000 {
            let mut grad = vec![0.0f32; 72];
            penalty.value_and_grad(&params, &mut grad);
            params
                .iter_mut()
                .zip(&grad)
                .for_each(|(p, g)| *p -= 0.01 * g);
        }
        let r = penalty.pearson(&params).unwrap().abs();
        assert!(start < 0.5 && r > 0.999_999, "|r| went from {start} to {r}");
        let decoded = decode_correlation_images(&params, penalty.selection(), 4, 4).unwrap();
        let scores = score_correlation_decoding(&decoded, &secret).unwrap();
        assert!(
            scores.best_of_two.mean_mape <= 1.0,
            "{:?}",
            scores.best_of_two
        );
        assert!(scores.best_of_two.mean_cosine > 0.999);
        assert_eq!(scores.global, scores.best_of_two);
    }

    #[test]
    fn decoder_tries_the_inverse_and_handles_constant_images() {
        let specs = specs_from(&[("w", &[2, 4], ParamKind::Weight)]);
        let selection =
            ParamSelection::select(&specs, 8, "values", SelectionRule::default()).unwrap();
        // image 0: weights anti-correlated with 0, 85, 170, 255; image 1: constant
        let params = [3.0f32, 2.0, 1.0, 0.0, 5.0, 5.0, 5.0, 5.0];
        let decoded = decode_correlation_images(&params, &selection, 2, 2).unwrap();
        assert_eq!(decoded.image(0), &[255, 170, 85, 0]);
        assert_eq!(decoded.image(1), &[0, 0, 0, 0]);
        let originals = ImageSecret::new(2, 2, 2, vec![0, 85, 170, 255, 9, 9, 9, 9]).unwrap();
        let scores = score_correlation_decoding(&decoded, &originals).unwrap();
        assert_eq!(scores.inverted, vec![true, false]);
        assert_eq!(scores.best_of_two.mape, vec![0.0, 9.0]);
        assert_eq!(scores.best_images.image(0), &[0, 85, 170, 255]);
        let wrong = ImageSecret::new(2, 4, 1, vec![0; 8]).unwrap();
        assert!(matches!(
            score_correlation_decoding(&decoded, &wrong),
            Err(AttackError::ImageSizeMismatch { .. })
        ));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let specs = small_specs();
        let secret: Vec<f64> = (0..10).map(f64::from).collect();
        for lambda in [-0.1, f64::NAN, f64::INFINITY] {
            let err = CorrelationPenalty::new(&specs, &secret, lambda, SelectionRule::default())
                .unwrap_err();
            assert!(matches!(err, AttackError::InvalidLambda { .. }), "{err}");
        }
        let err =
            CorrelationPenalty::new(&specs, &[1.0; 10], 1.0, SelectionRule::default()).unwrap_err();
        assert!(err.to_string().contains("equal"), "{err}");
        let too_long: Vec<f64> = (0..21).map(f64::from).collect();
        let err =
            CorrelationPenalty::new(&specs, &too_long, 1.0, SelectionRule::default()).unwrap_err();
        assert!(
            matches!(
                err,
                AttackError::SecretTooLarge {
                    needed: 21,
                    available: 20,
                    unit: "values",
                    ..
                }
            ),
            "{err}"
        );
    }
}
