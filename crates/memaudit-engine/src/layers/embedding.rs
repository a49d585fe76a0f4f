//! Embedding: token ids `[T, B]` (time-major) -> vectors `[T, B, E]`, table W of shape `[V, E]`
//! (PyTorch's `nn.Embedding` layout and default init N(0, 1)).
//!
//! Per-example gradient norm (engine.md): the embedding is a linear layer on one-hot inputs, so
//! the Gram identity's `A A^T` becomes the indicator `[tok_t == tok_s]` and
//! `||grad_i||^2 = sum_{t,s} [tok_t == tok_s] g_t . g_s` (`NormRule::Gram`). The equivalent
//! sparse materialisation (`NormRule::Materialize`, the default: O(T log T + T E) against the
//! Gram's O(T^2) comparisons) sums the g_t of each distinct token and adds the squared norms of
//! those sums. The clipped sum scatters `c_i g_t` into row `tok_t`.

use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::compute::NormRule;
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Embedding {
    pub vocab: usize,
    pub dim: usize,
    rule: Option<NormRule>,
}

impl Embedding {
    pub fn new(vocab: usize, dim: usize) -> Self {
        Self {
            vocab,
            dim,
            rule: None,
        }
    }

    fn tokens<'a>(&self, x: &'a Value) -> Result<&'a TokenInput> {
        match x {
            Value::Tokens(t) => {
                if t.ids.len() != t.seq_len * t.batch {
                    return Err(EngineError::Shape(format!(
                        "token input claims [{}, {}] but holds {} ids",
                        t.seq_len,
                        t.batch,
                        t.ids.len()
                    )));
                }
                Ok(t)
            }
            _ => Err(EngineError::Shape(
                "embedding expects token ids [T, B]".into(),
            )),
        }
    }
}

/// Gradient state: G = dL/d(embedding output), `[T, B, E]`.
struct EmbeddingGrad {
    g: Tensor,
}

impl Layer for Embedding {
    fn kind(&self) -> &'static str {
        "embedding"
    }

    fn params(&self) -> Vec<ParamDesc> {
        vec![ParamDesc::new(
            "weight",
            vec![self.vocab, self.dim],
            ParamKind::Embedding,
        )]
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn RngCore) {
        for v in p.iter_mut() {
            *v = StandardNormal.sample(rng);
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [t, b] => Ok(vec![*t, *b, self.dim]),
            _ => Err(EngineError::Shape(format!(
                "embedding expects token ids [T, B], got {input:?}"
            ))),
        }
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let tok = self.tokens(x)?;
        let e = self.dim;
        if let Some((r, &id)) = tok
            .ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= self.vocab)
        {
            return Err(EngineError::Shape(format!(
                "token id {id} at step {} of example {} is outside the vocabulary of {}",
                r / tok.batch.max(1),
                r % tok.batch.max(1),
                self.vocab
            )));
        }
        let mut y = Tensor::zeros(&[tok.seq_len, tok.batch, e]);
        for (row, &id) in y.data.chunks_exact_mut(e.max(1)).zip(&tok.ids) {
            let id = id as usize;
            row.copy_from_slice(&p[id * e..(id + 1) * e]);
        }
        Ok((y, nothing()))
    }

    fn backward(
        &self,
        _p: &[f32],
        x: &Value,
        _cache: &Cache,
        dy: Tensor,
        _need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        // Token ids have no gradient; the model's input gradient stops here.
        self.tokens(x)?;
        Ok((None, Box::new(EmbeddingGrad { g: dy })))
    }

    fn add_sq_norms(&self, _p: &[f32], x: &Value, _cache: &Cache, st: &GradState, out: &mut [f32]) {
        let g = &downcast::<EmbeddingGrad>(st, "embedding").g.data;
        let Value::Tokens(tok) = x else {
            unreachable!("rejected in forward")
        };
        let (steps, b, e) = (tok.seq_len, tok.batch, self.dim);
        let rule = self.rule.unwrap_or(NormRule::Materialize);
        let row = |t: usize, i: usize| &g[(t * b + i) * e..(t * b + i + 1) * e];
        let dot = |u: &[f32], v: &[f32]| -> f64 {
            u.iter().zip(v).map(|(a, c)| a * c).sum::<f32>() as f64
        };
        out.par_iter_mut().enumerate().for_each_init(
            || (Vec::<(u32, usize)>::new(), Vec::<f32>::new()),
            |(order, acc), (i, o)| {
                let id = |t: usize| tok.ids[t * b + i];
                let s: f64 = match rule {
                    NormRule::Gram => {
                        // sum_{t,s} [tok_t == tok_s] g_t . g_s, symmetric: diagonal + 2 x upper.
                        let mut s = 0.0f64;
                        for t in 0..steps {
                            let gt = row(t, i);
                            s += dot(gt, gt);
                            for u in t + 1..steps {
                                if id(u) == id(t) {
                                    s += 2.0 * dot(gt, row(u, i));
                                }
                            }
                        }
                        s
                    }
                    NormRule::Materialize => {
                        // The non-zero rows of the per-example gradient: sum g_t per token.
                        order.clear();
                        order.extend((0..steps).map(|t| (id(t), t)));
                        order.sort_unstable();
                        acc.clear();
                        acc.resize(e, 0.0);
                        let mut s = 0.0f64;
                        for (k, &(tk, t)) in order.iter().enumerate() {
                            for (a, v) in acc.iter_mut().zip(row(t, i)) {
                                *a += v;
                            }
                            if order.get(k + 1).is_none_or(|n| n.0 != tk) {
                                s += crate::compute::sum_sq(acc);
                                acc.fill(0.0);
                            }
                        }
                        s
                    }
                };
                *o += s as f32;
            },
        );
    }

    fn add_grads(
        &self,
        _p: &[f32],
        x: &Value,
        _cache: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    ) {
        let g = &downcast::<EmbeddingGrad>(st, "embedding").g.data;
        let Value::Tokens(tok) = x else {
            unreachable!("rejected in forward")
        };
        let e = self.dim;
        if e == 0 || tok.batch == 0 {
            return;
        }
        for (r, (grow, &id)) in g.chunks_exact(e).zip(&tok.ids).enumerate() {
            let c = scale.map_or(1.0, |s| s[r % tok.batch]);
            if c == 0.0 {
                continue;
            }
            let id = id as usize;
            for (d, v) in grad[id * e..(id + 1) * e].iter_mut().zip(grow) {
                *d += c * v;
            }
        }
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let RefValue::Tokens(tok) = x else {
            return Err(EngineError::Shape("embedding expects token ids".into()));
        };
        let e = self.dim;
        let mut data = Vec::with_capacity(tok.ids.len() * e);
        for &id in &tok.ids {
            let id = id as usize;
            if id >= self.vocab {
                return Err(EngineError::Shape(format!("token id {id} >= vocab")));
            }
            data.extend_from_slice(&p[id * e..(id + 1) * e]);
        }
        Ok(RefValue::Dense {
            data,
            shape: vec![tok.seq_len, tok.batch, e],
        })
    }

    fn set_norm_rule(&mut self, rule: Option<NormRule>) {
        self.rule = rule;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use rand::{Rng, SeedableRng};

    /// Tokens from a small vocabulary so that ids repeat inside a sequence (the indicator Gram's
    /// off-diagonal terms are exercised).
    fn tokens(t: usize, b: usize, vocab: usize, seed: u64) -> Value {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Value::Tokens(TokenInput {
            seq_len: t,
            batch: b,
            ids: (0..t * b)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect(),
        })
    }

    #[test]
    fn oracles_both_norm_rules() {
        let mut l = Embedding::new(7, 5);
        let x = tokens(9, 6, 7, 3);
        check_layer_gradients(&l, &x, 1).unwrap();
        check_layer_per_example(
            &mut l,
            &x,
            2,
            &[Some(NormRule::Gram), Some(NormRule::Materialize), None],
        )
        .unwrap();
    }

    #[test]
    fn gram_and_sparse_materialisation_agree_exactly_enough() {
        // Same G, both rules: they are two summation orders of the same quantity.
        let l = Embedding::new(4, 8);
        let x = tokens(30, 5, 4, 9);
        let g = random_tensor(&[30, 5, 8], 4);
        let st: GradState = Box::new(EmbeddingGrad { g });
        let mut a = vec![0.0f32; 5];
        let mut b = vec![0.0f32; 5];
        let mut lg = l.clone();
        lg.set_norm_rule(Some(NormRule::Gram));
        lg.add_sq_norms(&[], &x, &nothing(), &st, &mut a);
        let mut lm = l.clone();
        lm.set_norm_rule(Some(NormRule::Materialize));
        lm.add_sq_norms(&[], &x, &nothing(), &st, &mut b);
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-5 * v.abs(), "{u} vs {v}");
        }
    }

    #[test]
    fn bad_ids_and_empty_batches() {
        let l = Embedding::new(3, 2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: false,
            rng: &mut rng,
        };
        let bad = Value::Tokens(TokenInput {
            seq_len: 1,
            batch: 2,
            ids: vec![1, 3],
        });
        let err = l.forward(&[0.0; 6], &bad, &mut ctx).unwrap_err();
        assert!(err.to_string().contains("token id 3"), "{err}");
        let empty = Value::Tokens(TokenInput {
            seq_len: 4,
            batch: 0,
            ids: vec![],
        });
        let (y, c) = l.forward(&[0.0; 6], &empty, &mut ctx).unwrap();
        assert_eq!(y.shape, vec![4, 0, 2]);
        let (_, st) = l.backward(&[0.0; 6], &empty, &c, y, false).unwrap();
        let mut out: Vec<f32> = vec![];
        l.add_sq_norms(&[0.0; 6], &empty, &c, &st, &mut out);
        let mut g = vec![0.0; 6];
        l.add_grads(&[0.0; 6], &empty, &c, &st, Some(&[]), &mut g);
        assert!(g.iter().all(|&v| v == 0.0));
    }
}
