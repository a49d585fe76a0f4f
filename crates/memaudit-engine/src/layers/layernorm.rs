//! Layer normalisation (Ba, Kiros & Hinton 2016, "Layer Normalization") over the last dimension,
//! with a learned scale gamma and shift beta (`[F]` each): for every row x of `[B, F]` or of a
//! time-major sequence `[T, B, F]`,
//! `y = gamma . (x - mean(x)) / sqrt(var(x) + eps) + beta` (biased variance, eps = 1e-5, as
//! PyTorch's `nn.LayerNorm`). Statistics are per row, so examples never mix.
//!
//! Per-example gradients are materialised: example i's `(d gamma, d beta)` is
//! `(sum_t g_t . xhat_t, sum_t g_t)` over its rows, only `2F` floats, computed once in backward;
//! its norm is their sum of squares and the clipped sum their `c`-weighted sum.

use rayon::prelude::*;

use crate::compute::{self, conv::add_scaled_row_sum};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::Tensor;

/// PyTorch's default epsilon.
pub const LAYER_NORM_EPS: f32 = 1e-5;

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub features: usize,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(features: usize) -> Result<Self> {
        if features == 0 {
            return Err(EngineError::Config(
                "layer norm needs at least one feature".into(),
            ));
        }
        Ok(Self {
            features,
            eps: LAYER_NORM_EPS,
        })
    }
}

/// Forward cache: normalised rows and each row's 1 / sqrt(var + eps).
struct LnCache {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
}

/// Per-example parameter gradients `[B, 2F]` (gamma's then beta's, the parameter layout).
struct LnGrad {
    per_example: Vec<f32>,
}

/// Rows per rayon task: below this the work does not pay for a fork.
const MIN_ROWS_PER_TASK: usize = 16;

impl Layer for LayerNorm {
    fn kind(&self) -> &'static str {
        "layernorm"
    }

    fn params(&self) -> Vec<ParamDesc> {
        vec![
            ParamDesc::new("weight", vec![self.features], ParamKind::NormScale),
            ParamDesc::new("bias", vec![self.features], ParamKind::NormShift),
        ]
    }

    fn init(&self, p: &mut [f32], _rng: &mut dyn rand::RngCore) {
        let (g, b) = p.split_at_mut(self.features);
        g.fill(1.0);
        b.fill(0.0);
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input.last() {
            Some(&f) if f == self.features && (input.len() == 2 || input.len() == 3) => {
                Ok(input.to_vec())
            }
            _ => Err(EngineError::Shape(format!(
                "layer norm expects [B, {0}] or [T, B, {0}], got {input:?}",
                self.features
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let x = x.dense()?;
        self.out_shape(&x.shape)?;
        let f = self.features;
        let (gamma, beta) = p.split_at(f);
        let rows = x.rows();
        let mut y = Tensor::zeros(&x.shape);
        let mut xhat = vec![0.0f32; x.len()];
        let mut rstd = vec![0.0f32; rows];
        y.data
            .par_chunks_mut(f)
            .zip(xhat.par_chunks_mut(f))
            .zip(rstd.par_iter_mut())
            .zip(x.data.par_chunks(f))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(((yr, hr), rs), xr)| {
                let mean = xr.iter().sum::<f32>() / f as f32;
                let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / f as f32;
                let r = 1.0 / (var + self.eps).sqrt();
                *rs = r;
                for j in 0..f {
                    let h = (xr[j] - mean) * r;
                    hr[j] = h;
                    yr[j] = gamma[j] * h + beta[j];
                }
            });
        Ok((y, Box::new(LnCache { xhat, rstd })))
    }

    fn backward(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let c = downcast::<LnCache>(cache, "layernorm");
        let x = x.dense()?;
        let f = self.features;
        let gamma = &p[..f];
        let b = x.batch();
        let steps = if x.is_seq() { x.shape[0] } else { 1 };

        // Example i's rows are t * B + i (t < steps).
        let mut per_example = vec![0.0f32; b * 2 * f];
        per_example
            .par_chunks_mut(2 * f)
            .enumerate()
            .for_each(|(i, pe)| {
                let (dg, db) = pe.split_at_mut(f);
                for t in 0..steps {
                    let r = t * b + i;
                    let g = &dy.data[r * f..][..f];
                    let h = &c.xhat[r * f..][..f];
                    for j in 0..f {
                        dg[j] += g[j] * h[j];
                        db[j] += g[j];
                    }
                }
            });

        let dx = if need_dx {
            // dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat . xhat)), dxhat = gamma . dy.
            let mut dx = Tensor::zeros(&x.shape);
            dx.data
                .par_chunks_mut(f)
                .zip(dy.data.par_chunks(f))
                .zip(c.xhat.par_chunks(f))
                .zip(c.rstd.par_iter())
                .with_min_len(MIN_ROWS_PER_TASK)
                .for_each(|(((dr, g), h), &r)| {
                    let (mut m1, mut m2) = (0.0f32, 0.0f32);
                    for j in 0..f {
                        let d = gamma[j] * g[j];
                        m1 += d;
                        m2 += d * h[j];
                    }
                    let (m1, m2) = (m1 / f as f32, m2 / f as f32);
                    for j in 0..f {
                        dr[j] = r * (gamma[j] * g[j] - m1 - h[j] * m2);
                    }
                });
            Some(dx)
        } else {
            None
        };
        Ok((dx, Box::new(LnGrad { per_example })))
    }

    fn add_sq_norms(&self, _p: &[f32], _x: &Value, _c: &Cache, st: &GradState, out: &mut [f32]) {
        let s = downcast::<LnGrad>(st, "layernorm");
        for (o, pe) in out.iter_mut().zip(s.per_example.chunks(2 * self.features)) {
            *o += compute::sum_sq(pe) as f32;
        }
    }

    fn add_grads(
        &self,
        _p: &[f32],
        _x: &Value,
        _c: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    ) {
        let s = downcast::<LnGrad>(st, "layernorm");
        add_scaled_row_sum(&s.per_example, scale, grad);
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        self.out_shape(shape)?;
        let f = self.features;
        let eps = self.eps as f64;
        let mut out = Vec::with_capacity(data.len());
        for row in data.chunks(f) {
            let mean = row.iter().sum::<f64>() / f as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f as f64;
            for (j, v) in row.iter().enumerate() {
                out.push(p[j] * (v - mean) / (var + eps).sqrt() + p[f + j]);
            }
        }
        Ok(RefValue::Dense {
            data: out,
            shape: shape.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn rows_and_sequences_match_oracles() {
        let mut l = LayerNorm::new(7).unwrap();
        for (shape, seed) in [(vec![6, 7], 1), (vec![5, 4, 7], 2), (vec![1, 3, 7], 3)] {
            let x = Value::Dense(random_tensor(&shape, seed));
            check_layer_gradients(&l, &x, seed + 10).unwrap();
            // Materialised per-example gradients: the only rule this layer has.
            check_layer_per_example(&mut l, &x, seed + 20, &[None]).unwrap();
        }
    }

    #[test]
    fn normalises_and_rejects_bad_shapes() {
        let l = LayerNorm::new(4).unwrap();
        let mut p = vec![0.0; 8];
        l.init(&mut p, &mut rand::rng());
        let x = Value::Dense(
            Tensor::new(vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0], vec![2, 4]).unwrap(),
        );
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: false,
            rng: &mut rng,
        };
        let (y, _) = l.forward(&p, &x, &mut ctx).unwrap();
        // Row 1: mean 2.5, var 1.25. Row 2 is constant: xhat = 0, no NaN (eps).
        let want = [-1.5, -0.5, 0.5, 1.5].map(|v: f32| v / (1.25f32 + 1e-5).sqrt());
        for (a, b) in y.data[..4].iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(y.data[4..].iter().all(|&v| v == 0.0));
        let bad = Value::Dense(random_tensor(&[2, 5], 1));
        assert!(l.forward(&p, &bad, &mut ctx).is_err());
        assert!(LayerNorm::new(0).is_err());

        let empty = Value::Dense(random_tensor(&[3, 0, 4], 1));
        let (y, c) = l.forward(&p, &empty, &mut ctx).unwrap();
        let (dx, st) = l.backward(&p, &empty, &c, y, true).unwrap();
        assert!(dx.unwrap().is_empty());
        let mut g = vec![0.0; 8];
        l.add_grads(&p, &empty, &c, &st, Some(&[]), &mut g);
        assert!(g.iter().all(|&v| v == 0.0));
    }
}
