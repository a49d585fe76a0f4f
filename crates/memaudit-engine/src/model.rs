//! A model is a stack of layers ending in softmax cross-entropy, over one flat parameter vector.
//!
//! `Model::gradients` is the one backward every trainer uses. Given clipping it returns the
//! per-parameter *clipped sum* of per-example gradients and each example's norm, at the cost of a
//! plain backward plus the per-layer norm rules (book-keeping: every layer's G and A stay alive
//! until all norms are summed, then each weight gradient is one GEMM with G's rows scaled).

use std::ops::Range;

use rand::RngCore;

use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::loss::softmax_cross_entropy;
use crate::params::{ParamSpec, total_len};
use crate::tensor::Tensor;

/// A training or evaluation batch.
#[derive(Clone, Debug)]
pub struct Batch {
    pub input: Value,
    /// One target per prediction row (time-major for sequences).
    pub targets: Vec<u32>,
    /// Optional padding mask, one entry per prediction row (0 = ignore).
    pub mask: Option<Vec<f32>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.input.batch()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples `idx` as a new batch.
    pub fn select(&self, idx: &[usize]) -> Batch {
        let b = self.len();
        let rows_per = self.targets.len().checked_div(b).unwrap_or(0);
        // Targets and mask have one entry per prediction row: time-major for sequences.
        fn pick<T: Copy>(v: &[T], rows_per: usize, b: usize, idx: &[usize]) -> Vec<T> {
            (0..rows_per)
                .flat_map(|t| idx.iter().map(move |&i| v[t * b + i]))
                .collect()
        }
        let mask = self.mask.as_ref().map(|m| pick(m, rows_per, b, idx));
        Batch {
            input: self.input.select(idx),
            targets: pick(&self.targets, rows_per, b, idx),
            mask,
        }
    }
}

/// Per-example clipping.
#[derive(Clone, Debug, PartialEq)]
pub enum Clipping {
    /// One bound C over all parameters together: c_i = min(1, C / ||g_i||).
    Flat(f32),
    /// One bound per layer group: `group_of_layer[l]` names the group of layer l, `bounds[k]` its
    /// bound C_k. The total sensitivity is sqrt(sum C_k^2) (the DP noise must use it).
    PerGroup {
        bounds: Vec<f32>,
        group_of_layer: Vec<usize>,
    },
}

impl Clipping {
    /// The L2 sensitivity of the clipped sum w.r.t. one example.
    pub fn sensitivity(&self) -> f64 {
        match self {
            Clipping::Flat(c) => *c as f64,
            Clipping::PerGroup { bounds, .. } => bounds
                .iter()
                .map(|&c| (c as f64).powi(2))
                .sum::<f64>()
                .sqrt(),
        }
    }
}

/// What `Model::gradients` should compute.
pub struct GradRequest<'r> {
    pub clipping: Option<&'r Clipping>,
    pub input_grad: bool,
    pub train: bool,
    pub rng: &'r mut dyn RngCore,
}

/// The result of one forward/backward.
#[derive(Debug, Default)]
pub struct GradOutput {
    /// Sum of per-example losses.
    pub loss_sum: f64,
    pub per_example_loss: Vec<f32>,
    /// Sum over examples of (clipped, if requested) per-example gradients; same layout as params.
    pub grad: Vec<f32>,
    /// Per-example gradient norms before clipping (all parameters), when clipping was requested.
    pub norms: Option<Vec<f32>>,
    /// Per-group, per-example norms (`[group][example]`) for per-group clipping.
    pub group_norms: Option<Vec<Vec<f32>>>,
    /// Gradient of the summed loss w.r.t. the dense input, when requested.
    pub input_grad: Option<Tensor>,
    /// Correct predictions and counted prediction rows (accuracy for classifiers).
    pub correct: usize,
    pub counted: usize,
}

/// A sequential model over a flat parameter vector.
pub struct Model {
    layers: Vec<Box<dyn Layer>>,
    names: Vec<String>,
    ranges: Vec<Range<usize>>,
    specs: Vec<ParamSpec>,
}

impl Model {
    /// Assemble layers (named, e.g. `fc1`) into a model. Fails closed: a layer that declares
    /// parameters but only the parameterless no-op per-example rules is refused, since it would
    /// train without clipping and void DP.
    pub fn new(layers: Vec<(String, Box<dyn Layer>)>) -> Result<Self> {
        let mut specs = Vec::new();
        let mut ranges = Vec::new();
        let mut names = Vec::new();
        let mut off = 0;
        let mut boxed = Vec::new();
        for (li, (name, layer)) in layers.into_iter().enumerate() {
            if !layer.params().is_empty()
                && layer.per_example_rule() == PerExampleRule::NoParameters
            {
                return Err(EngineError::Config(format!(
                    "layer {name} ({}) has parameters but no per-example gradient rule: it cannot be clipped, so it cannot train",
                    layer.kind()
                )));
            }
            let start = off;
            for d in layer.params() {
                let len = d.len();
                specs.push(ParamSpec {
                    name: format!("{name}.{}", d.suffix),
                    shape: d.shape,
                    offset: off,
                    kind: d.kind,
                    layer: li,
                });
                off += len;
            }
            ranges.push(start..off);
            names.push(name);
            boxed.push(layer);
        }
        Ok(Self {
            layers: boxed,
            names,
            ranges,
            specs,
        })
    }

    pub fn num_params(&self) -> usize {
        total_len(&self.specs)
    }

    pub fn param_specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn layer_names(&self) -> &[String] {
        &self.names
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn layer(&self, i: usize) -> &dyn Layer {
        self.layers[i].as_ref()
    }

    pub fn layer_mut(&mut self, i: usize) -> &mut dyn Layer {
        self.layers[i].as_mut()
    }

    pub fn param_range(&self, layer: usize) -> Range<usize> {
        self.ranges[layer].clone()
    }

    /// Freshly initialised parameters.
    pub fn init_params(&self, rng: &mut dyn RngCore) -> Vec<f32> {
        let mut p = vec![0.0f32; self.num_params()];
        for (l, r) in self.layers.iter().zip(&self.ranges) {
            l.init(&mut p[r.clone()], rng);
        }
        p
    }

    fn check_params(&self, params: &[f32]) -> Result<()> {
        if params.len() != self.num_params() {
            return Err(EngineError::Shape(format!(
                "model has {} parameters, got a vector of {}",
                self.num_params(),
                params.len()
            )));
        }
        Ok(())
    }

    /// Logits for a batch (evaluation mode unless `train`).
    pub fn forward(
        &self,
        params: &[f32],
        input: &Value,
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<Tensor> {
        self.check_params(params)?;
        let mut ctx = ForwardCtx { train, rng };
        let mut cur: Option<Tensor> = None;
        for (l, r) in self.layers.iter().zip(&self.ranges) {
            let (y, _) = match &cur {
                None => l.forward(&params[r.clone()], input, &mut ctx)?,
                Some(t) => l.forward(&params[r.clone()], &Value::Dense(t.clone()), &mut ctx)?,
            };
            cur = Some(y);
        }
        cur.ok_or_else(|| EngineError::Config("model has no layers".into()))
    }

    /// Forward, loss and backward for one batch; see the module docs.
    pub fn gradients(
        &self,
        params: &[f32],
        batch: &Batch,
        req: GradRequest<'_>,
    ) -> Result<GradOutput> {
        self.check_params(params)?;
        let b = batch.len();
        let n = self.num_params();
        let groups = match req.clipping {
            Some(Clipping::PerGroup {
                bounds,
                group_of_layer,
            }) => {
                if group_of_layer.len() != self.layers.len()
                    || group_of_layer.iter().any(|&g| g >= bounds.len())
                {
                    return Err(EngineError::Config(format!(
                        "per-group clipping needs a group (< {}) for each of the {} layers",
                        bounds.len(),
                        self.layers.len()
                    )));
                }
                bounds.len()
            }
            _ => 1,
        };
        if b == 0 {
            // Valid under Poisson sampling: no examples, zero gradient (the DP step adds noise only).
            return Ok(GradOutput {
                grad: vec![0.0; n],
                norms: req.clipping.map(|_| Vec::new()),
                group_norms: req.clipping.map(|_| vec![Vec::new(); groups]),
                ..Default::default()
            });
        }

        // Forward, keeping every layer's input and cache.
        let mut ctx = ForwardCtx {
            train: req.train,
            rng: req.rng,
        };
        let mut inputs: Vec<Value> = Vec::with_capacity(self.layers.len());
        let mut caches: Vec<Cache> = Vec::with_capacity(self.layers.len());
        let mut cur = batch.input.clone();
        for (l, r) in self.layers.iter().zip(&self.ranges) {
            let (y, c) = l.forward(&params[r.clone()], &cur, &mut ctx)?;
            inputs.push(std::mem::replace(&mut cur, Value::Dense(y)));
            caches.push(c);
        }
        let Value::Dense(logits) = cur else {
            unreachable!()
        };
        let loss = softmax_cross_entropy(&logits, &batch.targets, batch.mask.as_deref())?;
        drop(logits);

        // Backward: input gradients, and each layer's G kept for its weight gradient.
        let mut states: Vec<Option<GradState>> = (0..self.layers.len()).map(|_| None).collect();
        let mut dy = loss.dlogits;
        let mut input_grad = None;
        for li in (0..self.layers.len()).rev() {
            let need_dx = li > 0 || req.input_grad;
            let (dx, st) = self.layers[li].backward(
                &params[self.ranges[li].clone()],
                &inputs[li],
                &caches[li],
                dy,
                need_dx,
            )?;
            states[li] = Some(st);
            match dx {
                Some(dx) if li > 0 => dy = dx,
                Some(dx) => {
                    input_grad = Some(dx);
                    dy = Tensor::zeros(&[0]);
                }
                None => dy = Tensor::zeros(&[0]),
            }
        }

        let mut grad = vec![0.0f32; n];
        let mut norms = None;
        let mut group_norms = None;
        match req.clipping {
            None => {
                for li in 0..self.layers.len() {
                    let r = self.ranges[li].clone();
                    let st = states[li].as_ref().unwrap();
                    self.layers[li].add_grads(
                        &params[r.clone()],
                        &inputs[li],
                        &caches[li],
                        st,
                        None,
                        &mut grad[r],
                    );
                }
            }
            Some(clip) => {
                let group_of = |li: usize| match clip {
                    Clipping::Flat(_) => 0,
                    Clipping::PerGroup { group_of_layer, .. } => group_of_layer[li],
                };
                let mut sq = vec![vec![0.0f32; b]; groups];
                for li in 0..self.layers.len() {
                    let r = self.ranges[li].clone();
                    if r.is_empty() {
                        continue;
                    }
                    let st = states[li].as_ref().unwrap();
                    self.layers[li].add_sq_norms(
                        &params[r],
                        &inputs[li],
                        &caches[li],
                        st,
                        &mut sq[group_of(li)],
                    );
                }
                let total: Vec<f32> = (0..b)
                    .map(|i| sq.iter().map(|g| g[i].max(0.0)).sum::<f32>().sqrt())
                    .collect();
                let gnorms: Vec<Vec<f32>> = sq
                    .iter()
                    .map(|g| g.iter().map(|v| v.max(0.0).sqrt()).collect())
                    .collect();
                let factors: Vec<Vec<f32>> = match clip {
                    Clipping::Flat(c) => {
                        vec![total.iter().map(|&nrm| clip_factor(*c, nrm)).collect()]
                    }
                    Clipping::PerGroup { bounds, .. } => gnorms
                        .iter()
                        .zip(bounds)
                        .map(|(g, &c)| g.iter().map(|&nrm| clip_factor(c, nrm)).collect())
                        .collect(),
                };
                for li in 0..self.layers.len() {
                    let r = self.ranges[li].clone();
                    if r.is_empty() {
                        continue;
                    }
                    let st = states[li].as_ref().unwrap();
                    let f = &factors[group_of(li)];
                    self.layers[li].add_grads(
                        &params[r.clone()],
                        &inputs[li],
                        &caches[li],
                        st,
                        Some(f),
                        &mut grad[r],
                    );
                }
                norms = Some(total);
                group_norms = Some(gnorms);
            }
        }
        let loss_sum: f64 = loss.per_example.iter().map(|&x| x as f64).sum();
        Ok(GradOutput {
            loss_sum,
            per_example_loss: loss.per_example,
            grad,
            norms,
            group_norms,
            input_grad,
            correct: loss.correct,
            counted: loss.counted,
        })
    }

    /// The first layer whose parameters are non-finite, for error messages.
    pub fn first_nonfinite_layer(&self, params: &[f32]) -> Option<&str> {
        self.ranges
            .iter()
            .position(|r| params[r.clone()].iter().any(|v| !v.is_finite()))
            .map(|i| self.names[i].as_str())
    }

    /// The first layer whose slice of `grad` is non-finite.
    pub fn first_nonfinite_grad_layer(&self, grad: &[f32]) -> Option<&str> {
        self.first_nonfinite_layer(grad)
    }

    /// Summed loss of the naive f64 forward (finite-difference oracle for whole models).
    pub fn reference_loss(&self, params: &[f64], batch: &Batch) -> Result<f64> {
        let mut cur = RefValue::from_value(&batch.input);
        for (l, r) in self.layers.iter().zip(&self.ranges) {
            cur = l.reference_forward(&params[r.clone()], &cur)?;
        }
        let (logits, shape) = cur.dense()?;
        Ok(crate::loss::reference_loss(
            logits,
            shape,
            &batch.targets,
            batch.mask.as_deref(),
        ))
    }
}

/// `min(1, C / norm)`; an all-zero gradient keeps factor 1.
#[inline]
pub fn clip_factor(c: f32, norm: f32) -> f32 {
    if norm > c { c / norm } else { 1.0 }
}
