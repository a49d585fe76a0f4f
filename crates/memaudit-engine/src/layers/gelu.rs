//! GELU (Hendrycks & Gimpel 2016, "Gaussian Error Linear Units"): `y = x Φ(x)`.
//!
//! Two forms, as in Hugging Face's GPT-2 (`activation_function` in its config.json):
//! - `Tanh` ("gelu_new", GPT-2's own): `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x^3)))`;
//! - `Exact` ("gelu", PyTorch's default `nn.GELU()`): `x Φ(x)` with the normal CDF from erfc.
//!
//! No parameters, so no per-example rule. The derivative needs the input, which `backward`
//! receives anyway, so nothing is cached.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::compute::vmath;
use crate::error::Result;
use crate::layer::*;
use crate::tensor::Tensor;

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeluKind {
    /// The tanh approximation (Hugging Face "gelu_new", GPT-2's activation).
    Tanh,
    /// `x Φ(x)` (Hugging Face "gelu").
    Exact,
}

impl GeluKind {
    /// The name Hugging Face's config.json uses (`activation_function`).
    pub fn hf_name(self) -> &'static str {
        match self {
            GeluKind::Tanh => "gelu_new",
            GeluKind::Exact => "gelu",
        }
    }
    /// Parse a Hugging Face `activation_function`; the tanh form has three names there.
    pub fn from_hf_name(s: &str) -> Option<Self> {
        match s {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(GeluKind::Tanh),
            "gelu" => Some(GeluKind::Exact),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Gelu {
    pub kind: GeluKind,
}

impl Gelu {
    pub fn new(kind: GeluKind) -> Self {
        Self { kind }
    }
}

/// sqrt(2 / π).
const K: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh form.
const C: f32 = 0.044715;
/// Elements per rayon task.
const CHUNK: usize = 4096;

/// 1 / sqrt(2 π), the normal density's constant.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

fn phi_cdf(x: f32) -> f32 {
    memaudit_accounting::special::ndtr(x as f64) as f32
}

/// GELU of `x` in place (the incremental decoder's rows).
pub(crate) fn gelu_inplace(kind: GeluKind, x: &mut [f32]) {
    match kind {
        GeluKind::Tanh => {
            let inp = x.to_vec();
            for v in x.iter_mut() {
                *v = K * (*v + C * *v * *v * *v);
            }
            vmath::tanh_inplace(x);
            for (u, &v) in x.iter_mut().zip(&inp) {
                *u = 0.5 * v * (1.0 + *u);
            }
        }
        GeluKind::Exact => {
            for v in x.iter_mut() {
                *v *= phi_cdf(*v);
            }
        }
    }
}

impl Layer for Gelu {
    crate::no_parameter_gradients!();

    fn kind(&self) -> &'static str {
        match self.kind {
            GeluKind::Tanh => "gelu_tanh",
            GeluKind::Exact => "gelu",
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&self, _p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let x = x.dense()?;
        let mut y = Tensor::zeros(&x.shape);
        y.data
            .par_chunks_mut(CHUNK)
            .zip(x.data.par_chunks(CHUNK))
            .for_each(|(y, x)| match self.kind {
                GeluKind::Tanh => {
                    for (u, &v) in y.iter_mut().zip(x) {
                        *u = K * (v + C * v * v * v);
                    }
                    vmath::tanh_inplace(y);
                    for (u, &v) in y.iter_mut().zip(x) {
                        *u = 0.5 * v * (1.0 + *u);
                    }
                }
                GeluKind::Exact => {
                    for (u, &v) in y.iter_mut().zip(x) {
                        *u = v * phi_cdf(v);
                    }
                }
            });
        Ok((y, nothing()))
    }

    fn backward(
        &self,
        _p: &[f32],
        x: &Value,
        _cache: &Cache,
        mut dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        if !need_dx {
            return Ok((None, nothing()));
        }
        let x = x.dense()?;
        dy.data
            .par_chunks_mut(CHUNK)
            .zip(x.data.par_chunks(CHUNK))
            .for_each_init(Vec::new, |th, (d, x)| match self.kind {
                GeluKind::Tanh => {
                    // y' = 0.5 (1 + th) + 0.5 x (1 - th^2) K (1 + 3 C x^2).
                    th.clear();
                    th.extend(x.iter().map(|&v| K * (v + C * v * v * v)));
                    vmath::tanh_inplace(th);
                    for ((g, &v), &t) in d.iter_mut().zip(x).zip(th.iter()) {
                        let dydx =
                            0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * K * (1.0 + 3.0 * C * v * v);
                        *g *= dydx;
                    }
                }
                GeluKind::Exact => {
                    // y' = Φ(x) + x φ(x).
                    for (g, &v) in d.iter_mut().zip(x) {
                        let pdf = (INV_SQRT_2PI * (-0.5 * (v as f64) * (v as f64)).exp()) as f32;
                        *g *= phi_cdf(v) + v * pdf;
                    }
                }
            });
        Ok((Some(dy), nothing()))
    }

    fn reference_forward(&self, _p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let f = |v: f64| match self.kind {
            GeluKind::Tanh => 0.5 * v * (1.0 + (k * (v + 0.044715 * v.powi(3))).tanh()),
            GeluKind::Exact => v * memaudit_accounting::special::ndtr(v),
        };
        Ok(RefValue::Dense {
            data: data.iter().map(|&v| f(v)).collect(),
            shape: shape.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn both_forms_match_finite_differences() {
        for kind in [GeluKind::Tanh, GeluKind::Exact] {
            let layer = Gelu::new(kind);
            for (shape, seed) in [(vec![5, 7], 1), (vec![3, 4, 6], 2)] {
                // Inputs in [-3, 3): both tails and the curved middle.
                let mut t = random_tensor(&shape, seed);
                t.data.iter_mut().for_each(|v| *v *= 3.0);
                check_layer_gradients(&layer, &Value::Dense(t), seed + 5).unwrap();
            }
        }
    }

    /// Known values (PyTorch 2.x `F.gelu(x)` and `F.gelu(x, approximate="tanh")` at x = 1 and
    /// -0.5), to 1e-6 (f32 rounding of a few operations).
    #[test]
    fn known_values() {
        let x = Value::Dense(Tensor::new(vec![1.0, -0.5], vec![1, 2]).unwrap());
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: false,
            rng: &mut rng,
        };
        let exact = Gelu::new(GeluKind::Exact)
            .forward(&[], &x, &mut ctx)
            .unwrap()
            .0;
        let tanh = Gelu::new(GeluKind::Tanh)
            .forward(&[], &x, &mut ctx)
            .unwrap()
            .0;
        for (a, b) in exact.data.iter().zip([0.841_344_8, -0.154_268_77]) {
            assert!((a - b).abs() < 1e-6, "exact {a} vs {b}");
        }
        for (a, b) in tanh.data.iter().zip([0.841_192, -0.154_286]) {
            assert!((a - b).abs() < 1e-6, "tanh {a} vs {b}");
        }
        assert_eq!(GeluKind::from_hf_name("gelu_new"), Some(GeluKind::Tanh));
        assert_eq!(GeluKind::from_hf_name("relu"), None);
    }
}
