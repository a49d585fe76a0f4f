//! The layer interface.
//!
//! A layer's backward is split in two so that DP-SGD costs little more than a plain step:
//! 1. `backward` propagates the output gradient to the input (that does not depend on clipping)
//!    and keeps what the weight gradient needs (G, the gradient w.r.t. the layer's pre-activation
//!    output, next to the cached input A);
//! 2. once every layer has reported its per-example squared norms (`add_sq_norms`) the model knows
//!    each example's clip factor c_i, and `add_grads` forms the clipped sum `(c . G)^T A`: the same
//!    GEMM a plain backward does.
//!
//! Losses are per example, and gradients are of the *sum* of per-example losses: the optimizer
//! divides by the batch size (plain) or by the expected batch size (DP-SGD).

use std::any::Any;

use rand::RngCore;

use crate::error::{EngineError, Result};
use crate::params::ParamKind;
use crate::tensor::Tensor;

/// Token ids of a batch of sequences, time-major: id of example `b` at step `t` is `ids[t * batch + b]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInput {
    pub seq_len: usize,
    pub batch: usize,
    pub ids: Vec<u32>,
}

/// Sparse rows (CSR), e.g. bag-of-words features: row `i` has entries
/// `indices[row_ptr[i]..row_ptr[i+1]]` with `values[..]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseInput {
    pub dim: usize,
    pub row_ptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseInput {
    pub fn rows(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.row_ptr[i], self.row_ptr[i + 1]);
        (&self.indices[s..e], &self.values[s..e])
    }

    /// The rows `idx` (in that order) as a new matrix; copies only those rows.
    pub fn select(&self, idx: &[usize]) -> SparseInput {
        let nnz: usize = idx
            .iter()
            .map(|&i| self.row_ptr[i + 1] - self.row_ptr[i])
            .sum();
        let mut out = SparseInput {
            dim: self.dim,
            row_ptr: Vec::with_capacity(idx.len() + 1),
            indices: Vec::with_capacity(nnz),
            values: Vec::with_capacity(nnz),
        };
        out.row_ptr.push(0);
        for &i in idx {
            let (ix, v) = self.row(i);
            out.indices.extend_from_slice(ix);
            out.values.extend_from_slice(v);
            out.row_ptr.push(out.indices.len());
        }
        out
    }
}

/// What flows into a layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Dense(Tensor),
    Tokens(TokenInput),
    Sparse(SparseInput),
}

impl Value {
    /// Number of examples.
    pub fn batch(&self) -> usize {
        match self {
            Value::Dense(t) => t.batch(),
            Value::Tokens(t) => t.batch,
            Value::Sparse(s) => s.rows(),
        }
    }

    pub fn dense(&self) -> Result<&Tensor> {
        match self {
            Value::Dense(t) => Ok(t),
            Value::Tokens(_) => Err(EngineError::Shape(
                "expected dense input, got token ids".into(),
            )),
            Value::Sparse(_) => Err(EngineError::Shape(
                "expected dense input, got sparse rows".into(),
            )),
        }
    }

    /// The examples `idx` (in that order) as a new batch.
    pub fn select(&self, idx: &[usize]) -> Value {
        match self {
            Value::Dense(t) => Value::Dense(select_examples(t, idx)),
            Value::Tokens(t) => {
                let mut ids = Vec::with_capacity(t.seq_len * idx.len());
                for s in 0..t.seq_len {
                    for &b in idx {
                        ids.push(t.ids[s * t.batch + b]);
                    }
                }
                Value::Tokens(TokenInput {
                    seq_len: t.seq_len,
                    batch: idx.len(),
                    ids,
                })
            }
            Value::Sparse(s) => Value::Sparse(s.select(idx)),
        }
    }
}

/// The examples `idx` of a dense tensor (any layout of `tensor.rs`).
pub fn select_examples(t: &Tensor, idx: &[usize]) -> Tensor {
    if t.is_seq() {
        let (steps, b, f) = (t.shape[0], t.shape[1], t.shape[2]);
        let mut data = Vec::with_capacity(steps * idx.len() * f);
        for s in 0..steps {
            for &i in idx {
                let r = s * b + i;
                data.extend_from_slice(&t.data[r * f..(r + 1) * f]);
            }
        }
        Tensor {
            data,
            shape: vec![steps, idx.len(), f],
        }
    } else {
        let per: usize = t.shape[1..].iter().product();
        let mut data = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            data.extend_from_slice(&t.data[i * per..(i + 1) * per]);
        }
        let mut shape = t.shape.clone();
        shape[0] = idx.len();
        Tensor { data, shape }
    }
}

/// f64 twin of `Value` for the naive reference forwards used by the finite-difference oracles.
#[derive(Clone, Debug)]
pub enum RefValue {
    Dense { data: Vec<f64>, shape: Vec<usize> },
    Tokens(TokenInput),
    Sparse(SparseInput),
}

impl RefValue {
    pub fn from_value(v: &Value) -> Self {
        match v {
            Value::Dense(t) => RefValue::Dense {
                data: t.data.iter().map(|&x| x as f64).collect(),
                shape: t.shape.clone(),
            },
            Value::Tokens(t) => RefValue::Tokens(t.clone()),
            Value::Sparse(s) => RefValue::Sparse(s.clone()),
        }
    }
    pub fn dense(&self) -> Result<(&[f64], &[usize])> {
        match self {
            RefValue::Dense { data, shape } => Ok((data, shape)),
            _ => Err(EngineError::Shape(
                "reference forward expected dense input".into(),
            )),
        }
    }
}

/// One parameter tensor a layer owns (its name is prefixed by the layer's name in the model).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDesc {
    /// Static for plain layers; composite layers (a transformer's blocks) build names like
    /// `h.3.attn.c_attn.weight` at run time.
    pub suffix: std::borrow::Cow<'static, str>,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

impl ParamDesc {
    pub fn new(
        suffix: impl Into<std::borrow::Cow<'static, str>>,
        shape: Vec<usize>,
        kind: ParamKind,
    ) -> Self {
        Self {
            suffix: suffix.into(),
            shape,
            kind,
        }
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whatever a layer keeps from forward for backward.
pub type Cache = Box<dyn Any + Send + Sync>;
/// Whatever a layer keeps from backward for its weight gradients (G, typically).
pub type GradState = Box<dyn Any + Send + Sync>;

/// No cache / no gradient state.
pub fn nothing() -> Box<dyn Any + Send + Sync> {
    Box::new(())
}

/// Mutable context of one forward pass.
pub struct ForwardCtx<'r> {
    /// Training mode (dropout active).
    pub train: bool,
    /// Randomness for dropout masks (not the DP noise, which has its own CSPRNG).
    pub rng: &'r mut dyn RngCore,
}

/// A layer: forward, backward, and its per-example gradient-norm rule.
pub trait Layer: Send + Sync {
    /// Short type name, e.g. `linear`.
    fn kind(&self) -> &'static str;

    /// The parameter tensors, in order; they are laid out contiguously in that order.
    fn params(&self) -> Vec<ParamDesc> {
        Vec::new()
    }

    /// Initialise this layer's parameters (its slice of the flat vector).
    fn init(&self, _p: &mut [f32], _rng: &mut dyn RngCore) {}

    /// Output shape for an input shape (dense dims; for token input `[T, B]`, for sparse `[B, dim]`).
    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// Forward pass. `p` is this layer's parameter slice.
    fn forward(&self, p: &[f32], x: &Value, ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)>;

    /// Backward pass: the gradient w.r.t. the input (if `need_dx`), and the state that
    /// `add_sq_norms` and `add_grads` need. `dy` is the gradient of the summed per-example losses
    /// w.r.t. this layer's output.
    fn backward(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)>;

    /// Add each example's squared norm of this layer's parameter gradient into `out` (len B).
    ///
    /// No default, on purpose: a layer with parameters that forgot its rule would train without
    /// clipping and silently void DP. Layers without parameters say so with
    /// `no_parameter_gradients!()`, and `Model::new` refuses that marker on a layer that declares
    /// parameters (see `per_example_rule`).
    ///
    /// ```compile_fail
    /// // A layer that implements neither per-example rule does not compile.
    /// use memaudit_engine::layer::*;
    /// use memaudit_engine::{Result, Tensor};
    /// struct Forgetful;
    /// impl Layer for Forgetful {
    ///     fn kind(&self) -> &'static str { "forgetful" }
    ///     fn out_shape(&self, i: &[usize]) -> Result<Vec<usize>> { Ok(i.to_vec()) }
    ///     fn forward(&self, _: &[f32], x: &Value, _: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
    ///         Ok((x.dense()?.clone(), nothing()))
    ///     }
    ///     fn backward(&self, _: &[f32], _: &Value, _: &Cache, dy: Tensor, _: bool)
    ///         -> Result<(Option<Tensor>, GradState)> { Ok((Some(dy), nothing())) }
    ///     fn reference_forward(&self, _: &[f64], x: &RefValue) -> Result<RefValue> { Ok(x.clone()) }
    /// }
    /// ```
    fn add_sq_norms(&self, p: &[f32], x: &Value, cache: &Cache, st: &GradState, out: &mut [f32]);

    /// Add `sum_i scale[i] * grad_i` (or the plain sum when `scale` is None) into `grad`, this
    /// layer's slice of the flat gradient. No default, for the same reason as `add_sq_norms`.
    fn add_grads(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        st: &GradState,
        scale: Option<&[f32]>,
        grad: &mut [f32],
    );

    /// Whether this layer's per-example rules are real (`Implemented`) or the parameterless
    /// marker. `no_parameter_gradients!()` overrides it; `Model::new` refuses a layer that has
    /// parameters but reports `NoParameters`.
    fn per_example_rule(&self) -> PerExampleRule {
        PerExampleRule::Implemented
    }

    /// Naive f64 forward (same semantics, evaluation mode) for finite-difference oracles.
    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue>;

    /// Force the per-example norm rule (tests exercise both paths); `None` = choose by cost.
    fn set_norm_rule(&mut self, _rule: Option<crate::compute::NormRule>) {}
}

/// What a layer's `add_sq_norms` / `add_grads` do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerExampleRule {
    /// The layer computes its per-example norms and (clipped) gradient sums.
    Implemented,
    /// The layer has no parameters, so both rules are no-ops.
    NoParameters,
}

/// The per-example rules of a layer without parameters: both no-ops, and a declaration that
/// `Model::new` checks against `params()` (inside an `impl Layer for ...` block).
#[macro_export]
macro_rules! no_parameter_gradients {
    () => {
        fn add_sq_norms(
            &self,
            _p: &[f32],
            _x: &$crate::layer::Value,
            _cache: &$crate::layer::Cache,
            _st: &$crate::layer::GradState,
            _out: &mut [f32],
        ) {
        }
        fn add_grads(
            &self,
            _p: &[f32],
            _x: &$crate::layer::Value,
            _cache: &$crate::layer::Cache,
            _st: &$crate::layer::GradState,
            _scale: Option<&[f32]>,
            _grad: &mut [f32],
        ) {
        }
        fn per_example_rule(&self) -> $crate::layer::PerExampleRule {
            $crate::layer::PerExampleRule::NoParameters
        }
    };
}

/// Downcast a cache or gradient state to the layer's own type.
pub fn downcast<'a, T: 'static>(b: &'a Box<dyn Any + Send + Sync>, layer: &str) -> &'a T {
    b.downcast_ref::<T>()
        .unwrap_or_else(|| panic!("{layer}: cache of the wrong type (engine bug)"))
}
