//! Critical samples and the critical sample ratio (CSR), found by **LASS** (Langevin Adversarial
//! Sample Search), Arpit et al. §4.1, Algorithm 1, as the authors' code (`lass_tf.py`) runs it.
//!
//! x is *critical* when some x̂ with ||x - x̂||∞ <= r has a different predicted class than x (the
//! predicted class, not the true label). CSR = #critical / |D|. LASS searches for x̂ from x̃ = x:
//!
//! 1. Δ = α sign(∂ CE(f(x̃), ŷ)/∂x̃) + β η, η ~ N(0, I), where ŷ = argmax f(x): gradient *ascent*
//!    on the loss of the clean prediction (the code's reading of the paper's sign(∂f_k/∂x));
//! 2. x̃ ← x̃ + Δ, then the projection onto the ∞-box: x̃_i ← x_i + r sign(x̃_i - x_i) where
//!    |x̃_i - x_i| > r (that is, clamp to [x_i - r, x_i + r]), then clip to the valid input range;
//! 3. x is marked critical if argmax f(x̃) ≠ ŷ at *any* iteration (cumulative OR);
//! 4. stop after `max_iter` iterations, or as soon as an iteration marks fewer than
//!    `min_new_critical` (20) new critical samples over the whole set.
//!
//! Defaults are the paper's for inputs in [0, 1]: α = 0.25/255, β = 0.2/255, r = 0.3/255, 100
//! iterations, chunks of 500 examples. The search runs on the engine's input gradients, batched.

use memaudit_engine::{Batch, GradRequest, Model, ModelConfig, Tensor, Value};
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::error::{DynamicsError, Result, invalid};

/// LASS parameters, in the input's units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LassConfig {
    /// α: the gradient-sign step.
    pub alpha: f32,
    /// β: the Gaussian noise scale.
    pub beta: f32,
    /// r: the radius of the ∞-box around x.
    pub radius: f32,
    pub max_iter: usize,
    /// Stop when an iteration finds fewer new critical samples than this (the code's 20).
    pub min_new_critical: usize,
    /// Valid input range the search stays in (`None`: unbounded).
    pub clip: Option<(f32, f32)>,
    /// Examples per forward/backward.
    pub batch: usize,
}

impl LassConfig {
    /// The paper's parameters for pixels scaled to [0, 1].
    pub fn paper() -> Self {
        Self {
            alpha: 0.25 / 255.0,
            beta: 0.2 / 255.0,
            radius: 0.3 / 255.0,
            max_iter: 100,
            min_new_critical: 20,
            clip: Some((0.0, 1.0)),
            batch: 500,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.radius > 0.0 && self.radius.is_finite()) {
            return Err(invalid(
                format!("LASS radius r = {}", self.radius),
                "must be > 0 and finite (the paper's r is 0.3/255 for inputs in [0, 1])",
            ));
        }
        if !(self.alpha >= 0.0
            && self.alpha.is_finite()
            && self.beta >= 0.0
            && self.beta.is_finite())
        {
            return Err(invalid(
                format!(
                    "LASS step alpha = {}, noise beta = {}",
                    self.alpha, self.beta
                ),
                "must be >= 0 and finite",
            ));
        }
        if self.max_iter == 0 || self.batch == 0 {
            return Err(invalid(
                "LASS",
                "the iteration limit and the batch size must be at least 1",
            ));
        }
        if let Some((lo, hi)) = self.clip
            && lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less)
        {
            return Err(invalid(
                format!("LASS input range [{lo}, {hi}]"),
                "the lower bound must be below the upper one",
            ));
        }
        Ok(())
    }
}

/// Project `x_adv` onto the ∞-box of radius `r` around `x`, then clip it to `clip`.
pub fn project_box(x_adv: &mut [f32], x: &[f32], r: f32, clip: Option<(f32, f32)>) {
    for (a, &c) in x_adv.iter_mut().zip(x) {
        let d = *a - c;
        if d.abs() > r {
            *a = c + r * d.signum();
        }
        if let Some((lo, hi)) = clip {
            *a = a.clamp(lo, hi);
        }
    }
}

/// The model must be a softmax classifier over dense inputs.
pub fn require_dense_classifier(config: &ModelConfig) -> Result<()> {
    match config {
        ModelConfig::Mlp { .. }
        | ModelConfig::TutorialCnn { .. }
        | ModelConfig::GroupNormCnn { .. } => Ok(()),
        ModelConfig::SparseLogReg { .. } => Err(DynamicsError::NotAClassifier {
            model: "a logistic regression over sparse features".into(),
        }),
        ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } | ModelConfig::Gpt { .. } => {
            Err(DynamicsError::NotAClassifier {
                model: "a language model (one softmax per token over token ids)".into(),
            })
        }
    }
}

/// What one LASS run found.
#[derive(Clone, Debug)]
pub struct LassOutcome {
    /// argmax f(x) of the clean inputs.
    pub predicted: Vec<u32>,
    pub critical: Vec<bool>,
    /// x̂: for critical samples the first point whose prediction differed; for the others the
    /// last search point (flat, like the input).
    pub adversarial: Vec<f32>,
    pub iterations: usize,
    /// Newly marked critical samples in each iteration.
    pub new_per_iteration: Vec<usize>,
}

impl LassOutcome {
    /// Critical sample ratio.
    pub fn csr(&self) -> f64 {
        if self.critical.is_empty() {
            return f64::NAN;
        }
        self.critical.iter().filter(|&&c| c).count() as f64 / self.critical.len() as f64
    }
}

fn batch_of(x: &[f32], example_shape: &[usize], targets: Vec<u32>) -> Batch {
    let mut shape = vec![targets.len()];
    shape.extend_from_slice(example_shape);
    Batch {
        input: Value::Dense(Tensor {
            data: x.to_vec(),
            shape,
        }),
        targets,
        mask: None,
    }
}

fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    if logits.shape.len() != 2 {
        return Err(DynamicsError::NotAClassifier {
            model: format!("a model with outputs of shape {:?}", logits.shape),
        });
    }
    let k = logits.shape[1];
    Ok(logits
        .data
        .chunks(k.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0usize, |b, (j, &v)| if v > row[b] { j } else { b }) as u32
        })
        .collect())
}

/// Predicted classes (evaluation mode) of flat inputs, in chunks of `chunk` examples.
pub fn predict(
    model: &Model,
    params: &[f32],
    x: &[f32],
    example_shape: &[usize],
    chunk: usize,
) -> Result<Vec<u32>> {
    let per: usize = example_shape.iter().product();
    // Evaluation mode draws nothing; the RNG only satisfies the signature.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut out = Vec::with_capacity(x.len() / per.max(1));
    for c in x.chunks(per * chunk.max(1)) {
        let b = batch_of(c, example_shape, vec![0; c.len() / per]);
        let logits = model.forward(params, &b.input, false, &mut rng)?;
        out.extend(argmax_rows(&logits)?);
    }
    Ok(out)
}

/// Run LASS on flat inputs `x` (examples of `example_shape`). `rng` draws the Langevin noise.
pub fn lass(
    model: &Model,
    params: &[f32],
    x: &[f32],
    example_shape: &[usize],
    cfg: &LassConfig,
    rng: &mut dyn RngCore,
) -> Result<LassOutcome> {
    cfg.validate()?;
    let per: usize = example_shape.iter().product();
    if per == 0 || !x.len().is_multiple_of(per) {
        return Err(invalid(
            "LASS inputs",
            format!(
                "{} values are not whole examples of shape {example_shape:?}",
                x.len()
            ),
        ));
    }
    let n = x.len() / per;
    let predicted = predict(model, params, x, example_shape, cfg.batch)?;
    let mut x_adv = x.to_vec();
    let mut adversarial = x.to_vec();
    let mut critical = vec![false; n];
    let mut new_per_iteration = Vec::new();
    let mut no_dropout = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for _ in 0..cfg.max_iter {
        let mut new = 0usize;
        for start in (0..n).step_by(cfg.batch) {
            let end = (start + cfg.batch).min(n);
            let (lo, hi) = (start * per, end * per);
            let b = batch_of(
                &x_adv[lo..hi],
                example_shape,
                predicted[start..end].to_vec(),
            );
            let out = model.gradients(
                params,
                &b,
                GradRequest {
                    clipping: None,
                    input_grad: true,
                    train: false,
                    rng: &mut no_dropout,
                },
            )?;
            let g = out
                .input_grad
                .ok_or_else(|| DynamicsError::NotAClassifier {
                    model: "a model without input gradients".into(),
                })?;
            for (a, &gv) in x_adv[lo..hi].iter_mut().zip(&g.data) {
                // np.sign: 0 stays 0.
                let s = if gv > 0.0 {
                    1.0
                } else if gv < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                let z: f32 = rng.sample(StandardNormal);
                *a += cfg.alpha * s + cfg.beta * z;
            }
            project_box(&mut x_adv[lo..hi], &x[lo..hi], cfg.radius, cfg.clip);
            let pred = predict(model, params, &x_adv[lo..hi], example_shape, cfg.batch)?;
            for (k, p) in pred.into_iter().enumerate() {
                let i = start + k;
                if !critical[i] && p != predicted[i] {
                    critical[i] = true;
                    adversarial[i * per..(i + 1) * per]
                        .copy_from_slice(&x_adv[i * per..(i + 1) * per]);
                    new += 1;
                }
            }
        }
        new_per_iteration.push(new);
        if new < cfg.min_new_critical {
            break;
        }
    }
    for i in 0..n {
        if !critical[i] {
            adversarial[i * per..(i + 1) * per].copy_from_slice(&x_adv[i * per..(i + 1) * per]);
        }
    }
    Ok(LassOutcome {
        predicted,
        critical,
        adversarial,
        iterations: new_per_iteration.len(),
        new_per_iteration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use memaudit_engine::layers::Linear;
    use rand::SeedableRng;

    #[test]
    fn box_projection_clamps_to_radius_then_clips() {
        let x = [0.5f32, 0.5, 0.5, 0.999, 0.0];
        let mut a = [0.9f32, 0.1, 0.52, 1.05, -0.3];
        project_box(&mut a, &x, 0.05, Some((0.0, 1.0)));
        assert_eq!(a, [0.55, 0.45, 0.52, 1.0, 0.0]);
        // Unclipped: exactly x ± r outside the box, untouched inside.
        let mut b = [0.9f32, 0.1, 0.52, 1.05, -0.3];
        project_box(&mut b, &x, 0.05, None);
        assert_eq!(b, [0.55, 0.45, 0.52, 0.999 + 0.05, -0.05]);
        // Idempotent, and always within r of x.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..1000).map(|_| rng.random::<f32>()).collect();
        let mut a: Vec<f32> = x
            .iter()
            .map(|v| v + rng.random_range(-0.1f32..0.1))
            .collect();
        project_box(&mut a, &x, 0.3 / 255.0, Some((0.0, 1.0)));
        let once = a.clone();
        project_box(&mut a, &x, 0.3 / 255.0, Some((0.0, 1.0)));
        assert_eq!(a, once);
        for (p, c) in a.iter().zip(&x) {
            // c ± r rounds to the nearest f32 near c (< 1): at most one ulp, 2^-24, beyond r.
            assert!((p - c).abs() <= 0.3 / 255.0 + f32::EPSILON && (0.0..=1.0).contains(p));
        }
    }

    /// A linear classifier on 2-D inputs whose boundary is the line x0 = 0.5: logits
    /// z0 = 0, z1 = x0 - 0.5 (class 1 on the right).
    fn half_plane() -> (Model, Vec<f32>) {
        let m = Model::new(vec![("fc".into(), Box::new(Linear::new(2, 2, true)))]).unwrap();
        // Weight [out, in] row-major, then bias.
        let p = vec![0.0, 0.0, 1.0, 0.0, 0.0, -0.5];
        (m, p)
    }

    fn points(offsets: &[f32]) -> Vec<f32> {
        // x0 = 0.5 + offset, x1 arbitrary; the L∞ distance to the boundary is |offset|.
        offsets.iter().flat_map(|&o| [0.5 + o, 0.3]).collect()
    }

    #[test]
    fn lass_flags_points_within_r_of_the_boundary_and_none_farther() {
        let (m, p) = half_plane();
        let r = 0.3f32 / 255.0;
        // Noise-free, no early stop: the sign steps walk every point toward the boundary.
        let cfg = LassConfig {
            beta: 0.0,
            min_new_critical: 0,
            clip: None,
            ..LassConfig::paper()
        };
        let near: Vec<f32> = (1..=20)
            .flat_map(|k| {
                let d = r * k as f32 / 21.0;
                [-d, d]
            })
            .collect();
        let far: Vec<f32> = (1..=20)
            .flat_map(|k| {
                let d = r * (1.05 + k as f32 / 4.0);
                [-d, d]
            })
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let out = lass(&m, &p, &points(&near), &[2], &cfg, &mut rng).unwrap();
        assert!(out.critical.iter().all(|&c| c), "{:?}", out.critical);
        assert_eq!(out.csr(), 1.0);
        // x̂ is within r of x and on the other side of the boundary.
        for (i, &o) in near.iter().enumerate() {
            let xh = out.adversarial[2 * i];
            assert!((xh - (0.5 + o)).abs() <= r * 1.0001);
            assert_eq!(xh > 0.5, o < 0.0, "point {i}: offset {o}, x̂ {xh}");
        }
        let out = lass(&m, &p, &points(&far), &[2], &cfg, &mut rng).unwrap();
        assert!(out.critical.iter().all(|&c| !c));
        assert_eq!(out.iterations, 100);

        // The paper's defaults (noise, stop at < 20 new): no far point is ever critical, and
        // points within r / 10 are found in the first iteration (a step of α = 0.83 r plus noise
        // of β = 0.67 r fails only when the noise is below -1.1 sigma, p = 0.14).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let close: Vec<f32> = (0..200)
            .map(|k| if k % 2 == 0 { -r / 10.0 } else { r / 10.0 })
            .collect();
        let out = lass(
            &m,
            &p,
            &points(&close),
            &[2],
            &LassConfig {
                clip: None,
                ..LassConfig::paper()
            },
            &mut rng,
        )
        .unwrap();
        assert!(out.csr() > 0.75, "csr {}", out.csr());
        let many_far: Vec<f32> = (0..200)
            .map(|k| if k % 2 == 0 { -1.01 * r } else { 1.01 * r })
            .collect();
        let out = lass(
            &m,
            &p,
            &points(&many_far),
            &[2],
            &LassConfig {
                min_new_critical: 0,
                clip: None,
                ..LassConfig::paper()
            },
            &mut rng,
        )
        .unwrap();
        assert_eq!(out.csr(), 0.0);
    }

    #[test]
    fn lass_respects_the_input_range_and_uses_the_predicted_label() {
        let (m, p) = half_plane();
        let r = 0.3f32 / 255.0;
        // A point just inside the boundary but at the top of the valid range: clipping to
        // [0, 0.5 - r/2] forbids crossing, so it cannot be critical.
        let cfg = LassConfig {
            beta: 0.0,
            min_new_critical: 0,
            clip: Some((0.0, 0.5 - r / 2.0)),
            ..LassConfig::paper()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let x = points(&[-r / 2.0]);
        let out = lass(&m, &p, &x, &[2], &cfg, &mut rng).unwrap();
        assert!(!out.critical[0]);
        assert!(out.adversarial[0] <= 0.5 - r / 2.0);
        assert_eq!(out.predicted, vec![0]);
    }

    #[test]
    fn bad_settings_and_models_are_errors() {
        let (m, p) = half_plane();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for r in [0.0f32, -1.0, f32::NAN] {
            let cfg = LassConfig {
                radius: r,
                ..LassConfig::paper()
            };
            let e = lass(&m, &p, &points(&[0.0]), &[2], &cfg, &mut rng).unwrap_err();
            assert!(e.to_string().contains("radius"), "{e}");
        }
        assert!(
            lass(
                &m,
                &p,
                &[0.1, 0.2, 0.3],
                &[2],
                &LassConfig::paper(),
                &mut rng
            )
            .is_err()
        );
        let lm = ModelConfig::LstmLm {
            vocab: 10,
            embed: 4,
            hidden: 4,
            layers: 1,
            dropout: 0.0,
        };
        let e = require_dense_classifier(&lm).unwrap_err();
        assert!(e.to_string().contains("not a softmax classifier"), "{e}");
        assert!(
            require_dense_classifier(&ModelConfig::SparseLogReg {
                features: 3,
                classes: 2
            })
            .is_err()
        );
    }
}
