//! Dropout (inverted: kept units are scaled by 1/(1-p) in training, identity in evaluation).
//!
//! The mask is drawn per element from the forward context's RNG, so every example gets its own
//! mask and the per-example gradients stay independent (no parameters, no norm rule).

use rand::Rng;

use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Dropout {
    pub p: f32,
}

impl Dropout {
    pub fn new(p: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(EngineError::Config(format!(
                "dropout probability must be in [0, 1), got {p}"
            )));
        }
        Ok(Self { p })
    }
}

impl Layer for Dropout {
    crate::no_parameter_gradients!();

    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&self, _p: &[f32], x: &Value, ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let mut y = x.dense()?.clone();
        if !ctx.train || self.p == 0.0 {
            return Ok((y, Box::new(None::<Vec<f32>>)));
        }
        let keep = 1.0 - self.p;
        let scale = 1.0 / keep;
        let mask: Vec<f32> = (0..y.len())
            .map(|_| {
                if ctx.rng.random::<f32>() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        for (v, m) in y.data.iter_mut().zip(&mask) {
            *v *= m;
        }
        Ok((y, Box::new(Some(mask))))
    }

    fn backward(
        &self,
        _p: &[f32],
        _x: &Value,
        cache: &Cache,
        mut dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        if !need_dx {
            return Ok((None, nothing()));
        }
        if let Some(mask) = downcast::<Option<Vec<f32>>>(cache, "dropout") {
            for (d, m) in dy.data.iter_mut().zip(mask) {
                *d *= m;
            }
        }
        Ok((Some(dy), nothing()))
    }

    fn reference_forward(&self, _p: &[f64], x: &RefValue) -> Result<RefValue> {
        Ok(x.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_tensor;
    use rand::SeedableRng;

    #[test]
    fn training_mask_scales_and_backward_uses_the_same_mask() {
        let layer = Dropout::new(0.5).unwrap();
        let x = Value::Dense(random_tensor(&[64, 32], 1));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut ctx = ForwardCtx {
            train: true,
            rng: &mut rng,
        };
        let (y, cache) = layer.forward(&[], &x, &mut ctx).unwrap();
        let xd = x.dense().unwrap();
        let mut dropped = 0;
        for (a, b) in xd.data.iter().zip(&y.data) {
            if *b == 0.0 {
                dropped += 1;
            } else {
                assert!((b - 2.0 * a).abs() < 1e-6);
            }
        }
        let frac = dropped as f64 / y.len() as f64;
        assert!((frac - 0.5).abs() < 0.05, "dropped fraction {frac}");
        // d(sum(y))/dx = mask
        let ones = Tensor {
            data: vec![1.0; y.len()],
            shape: y.shape.clone(),
        };
        let (dx, _) = layer.backward(&[], &x, &cache, ones, true).unwrap();
        for ((d, yv), xv) in dx.unwrap().data.iter().zip(&y.data).zip(&xd.data) {
            assert!((d * xv - yv).abs() < 1e-6);
        }
        assert!(Dropout::new(1.0).is_err() && Dropout::new(-0.1).is_err());
    }
}
