//! Loss-sensitivity (Arpit et al. §3.2, Fig. 3), as the paper defines it: g_x^t = ||∂L_t/∂x||₁,
//! the gradient of the loss after t SGD updates with respect to a training input x, taken by
//! back-propagating through the unrolled SGD steps (Maclaurin et al. 2015); ḡ_x averages g_x^t
//! over the measured steps, and its **Gini coefficient** over examples summarises how unequal
//! the examples' influence is (real data: a few examples dominate).
//!
//! Our reading of the underspecified parts (papers.md §4.4): θ_0 →(B_0) θ_1 → … →(B_{t-1}) θ_t is
//! plain SGD on mini-batch means, θ_{k+1} = θ_k − η ∇_θ L_{B_k}(θ_k); L_t = L_{B_t}(θ_t) is the
//! mean cross-entropy of the *next* mini-batch at θ_t (the training loss at step t). x counts as
//! an *earlier* training input: g_x^t is the derivative through the updates, summed over every
//! earlier step k with x_i ∈ B_k, −η (∂²L_{B_k}/∂x_i∂θ) λ_{k+1}, with the adjoint λ_t = ∇_θ L_t
//! and λ_k = λ_{k+1} − η (∂²L_{B_k}/∂θ²) λ_{k+1}. The direct dependence of L_t on the inputs of
//! B_t itself is left out by default (it is not influence through training, and it would give
//! the 10 examples of B_t an outsized share of each g^t); `include_direct` adds it (the total
//! derivative). Both second-order products come from one pass:
//! the gradient of L_{B_k} w.r.t. (θ, x), computed in forward-mode dual numbers with tangent
//! (λ_{k+1}, 0), returns (H_θθ λ, H_xθ λ) in its tangent part. All of it is f64, on a small
//! dedicated MLP (the paper's setup is a 2x16 MLP on 1,000 MNIST digits at 14x14); it matches
//! central finite differences through the same SGD steps (tests).
//!
//! The cheaper, clearly different estimate ("direct input gradient"): ||∇_x ℓ(θ_t; x)||₁, the
//! input gradient of x's own loss at the current parameters, no unrolling. It is reported next
//! to the unrolled measure here and, via the engine, for models of any size (`training.rs`).

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

use memaudit_engine::datasets::DenseDataset;
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::sampler::{BatchSampler, SamplingMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{Result, invalid};
use super::stats::gini;
use super::training::mix;

/// A forward-mode dual number v + d ε (ε² = 0): carries one directional derivative.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Dual {
    pub v: f64,
    pub d: f64,
}

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual {
            v: self.v + o.v,
            d: self.d + o.d,
        }
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual {
            v: self.v - o.v,
            d: self.d - o.d,
        }
    }
}
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual {
            v: self.v * o.v,
            d: self.d * o.v + self.v * o.d,
        }
    }
}
impl Div for Dual {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        Dual {
            v: self.v / o.v,
            d: (self.d * o.v - self.v * o.d) / (o.v * o.v),
        }
    }
}
impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual {
            v: -self.v,
            d: -self.d,
        }
    }
}
impl AddAssign for Dual {
    fn add_assign(&mut self, o: Dual) {
        self.v += o.v;
        self.d += o.d;
    }
}

/// The arithmetic the small MLP needs: f64 for training, [`Dual`] for second-order products.
pub trait Scalar:
    Copy
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    fn cst(v: f64) -> Self;
    fn value(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
}

impl Scalar for f64 {
    fn cst(v: f64) -> Self {
        v
    }
    fn value(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
}

impl Scalar for Dual {
    fn cst(v: f64) -> Self {
        Dual { v, d: 0.0 }
    }
    fn value(self) -> f64 {
        self.v
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        Dual {
            v: e,
            d: self.d * e,
        }
    }
    fn ln(self) -> Self {
        Dual {
            v: self.v.ln(),
            d: self.d / self.v,
        }
    }
    fn tanh(self) -> Self {
        let t = self.v.tanh();
        Dual {
            v: t,
            d: self.d * (1.0 - t * t),
        }
    }
}

/// A small fully connected softmax classifier in f64: sizes `[input, hidden.., classes]`,
/// parameters laid out per layer as W (`[out, in]`, row-major) then b, like the engine's Linear.
#[derive(Clone, Debug, PartialEq)]
pub struct SmallMlp {
    pub sizes: Vec<usize>,
    pub activation: ActivationKind,
}

impl SmallMlp {
    pub fn new(
        input: usize,
        hidden: &[usize],
        classes: usize,
        activation: ActivationKind,
    ) -> Result<Self> {
        if input == 0 || classes < 2 || hidden.contains(&0) {
            return Err(invalid(
                "loss-sensitivity MLP",
                format!(
                    "needs input >= 1, classes >= 2 and non-zero hidden sizes (got {input}, {hidden:?}, {classes})"
                ),
            ));
        }
        let mut sizes = vec![input];
        sizes.extend_from_slice(hidden);
        sizes.push(classes);
        Ok(Self { sizes, activation })
    }

    pub fn num_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    /// PyTorch's default initialisation, U(-1/sqrt(in), 1/sqrt(in)) for weights and biases.
    pub fn init(&self, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = Vec::with_capacity(self.num_params());
        for w in self.sizes.windows(2) {
            let bound = 1.0 / (w[0] as f64).sqrt();
            for _ in 0..w[1] * w[0] + w[1] {
                p.push(rng.random_range(-bound..bound));
            }
        }
        p
    }

    fn act<S: Scalar>(&self, z: S) -> S {
        match self.activation {
            ActivationKind::Relu => {
                if z.value() > 0.0 {
                    z
                } else {
                    S::cst(0.0)
                }
            }
            ActivationKind::Tanh => z.tanh(),
            ActivationKind::Sigmoid => S::cst(1.0) / (S::cst(1.0) + (-z).exp()),
        }
    }

    /// d act / d z as a function of the output a.
    fn act_grad<S: Scalar>(&self, a: S) -> S {
        match self.activation {
            ActivationKind::Relu => S::cst(if a.value() > 0.0 { 1.0 } else { 0.0 }),
            ActivationKind::Tanh => S::cst(1.0) - a * a,
            ActivationKind::Sigmoid => a * (S::cst(1.0) - a),
        }
    }

    /// Mean cross-entropy of the batch `x` (rows) with `labels`, its gradient w.r.t. the
    /// parameters and (if `need_dx`) w.r.t. the inputs, and the number of correct predictions.
    pub fn loss_grad<S: Scalar>(
        &self,
        p: &[S],
        x: &[S],
        labels: &[u32],
        need_dx: bool,
    ) -> (S, Vec<S>, Vec<S>, usize) {
        let n = labels.len();
        let layers = self.sizes.len() - 1;
        let inv_n = S::cst(1.0 / n.max(1) as f64);
        // Forward, keeping every layer's input.
        let mut acts: Vec<Vec<S>> = vec![x.to_vec()];
        let mut off = 0;
        let mut offsets = Vec::with_capacity(layers);
        for l in 0..layers {
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            offsets.push(off);
            let (w, b) = (&p[off..off + o * i], &p[off + o * i..off + o * i + o]);
            off += o * i + o;
            let a = &acts[l];
            let mut z = Vec::with_capacity(n * o);
            for r in 0..n {
                let row = &a[r * i..(r + 1) * i];
                for (u, &bu) in b.iter().enumerate() {
                    let wr = &w[u * i..(u + 1) * i];
                    let mut s = bu;
                    for (&wv, &av) in wr.iter().zip(row) {
                        s += wv * av;
                    }
                    z.push(if l + 1 < layers { self.act(s) } else { s });
                }
            }
            acts.push(z);
        }
        // Softmax cross-entropy, mean over the batch.
        let k = self.sizes[layers];
        let logits = &acts[layers];
        let mut delta = Vec::with_capacity(n * k);
        let mut loss = S::cst(0.0);
        let mut correct = 0;
        for (r, &y) in labels.iter().enumerate() {
            let row = &logits[r * k..(r + 1) * k];
            let (arg, m) =
                row.iter()
                    .enumerate()
                    .fold((0usize, f64::NEG_INFINITY), |(bi, bv), (j, v)| {
                        if v.value() > bv {
                            (j, v.value())
                        } else {
                            (bi, bv)
                        }
                    });
            correct += (arg == y as usize) as usize;
            // Shifting by a constant changes neither the value nor any derivative.
            let e: Vec<S> = row.iter().map(|&v| (v - S::cst(m)).exp()).collect();
            let mut sum = S::cst(0.0);
            for &ev in &e {
                sum += ev;
            }
            loss += (sum.ln() + S::cst(m) - row[y as usize]) * inv_n;
            for (j, &ev) in e.iter().enumerate() {
                let sm = ev / sum;
                let t = if j == y as usize {
                    S::cst(1.0)
                } else {
                    S::cst(0.0)
                };
                delta.push((sm - t) * inv_n);
            }
        }
        // Backward.
        let mut dp = vec![S::cst(0.0); p.len()];
        let mut dx = Vec::new();
        for l in (0..layers).rev() {
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            let off = offsets[l];
            let a = &acts[l];
            for r in 0..n {
                let dr = &delta[r * o..(r + 1) * o];
                let ar = &a[r * i..(r + 1) * i];
                for (u, &du) in dr.iter().enumerate() {
                    let g = &mut dp[off + u * i..off + (u + 1) * i];
                    for (gv, &av) in g.iter_mut().zip(ar) {
                        *gv += du * av;
                    }
                    dp[off + o * i + u] += du;
                }
            }
            if l == 0 && !need_dx {
                break;
            }
            let w = &p[off..off + o * i];
            let mut da = vec![S::cst(0.0); n * i];
            for r in 0..n {
                let dr = &delta[r * o..(r + 1) * o];
                let out = &mut da[r * i..(r + 1) * i];
                for (u, &du) in dr.iter().enumerate() {
                    for (ov, &wv) in out.iter_mut().zip(&w[u * i..(u + 1) * i]) {
                        *ov += du * wv;
                    }
                }
            }
            if l == 0 {
                dx = da;
            } else {
                for (d, &av) in da.iter_mut().zip(a.iter()) {
                    *d = *d * self.act_grad(av);
                }
                delta = da;
            }
        }
        (loss, dp, dx, correct)
    }
}

/// Plain SGD on the small MLP, the batches fixed in advance so the unrolled steps and the
/// finite differences run exactly the same updates.
#[derive(Clone, Debug)]
pub struct Trajectory {
    /// θ_0 ..= θ_T.
    pub params: Vec<Vec<f64>>,
    /// B_0 ..= B_T (B_T is the batch whose loss is L_T).
    pub batches: Vec<Vec<usize>>,
    pub lr: f64,
}

fn rows(x: &[f64], d: usize, idx: &[usize]) -> Vec<f64> {
    idx.iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
        .collect()
}

/// Run `batches.len() - 1` SGD steps from `p0`.
pub fn sgd_trajectory(
    net: &SmallMlp,
    p0: Vec<f64>,
    x: &[f64],
    labels: &[u32],
    batches: Vec<Vec<usize>>,
    lr: f64,
) -> Trajectory {
    let d = net.sizes[0];
    let mut params = vec![p0];
    for b in &batches[..batches.len().saturating_sub(1)] {
        let y: Vec<u32> = b.iter().map(|&i| labels[i]).collect();
        let cur = params.last().unwrap();
        let (_, g, _, _) = net.loss_grad(cur, &rows(x, d, b), &y, false);
        params.push(cur.iter().zip(&g).map(|(p, g)| p - lr * g).collect());
    }
    Trajectory {
        params,
        batches,
        lr,
    }
}

/// L_t = mean loss of B_t at θ_t.
pub fn loss_at(net: &SmallMlp, traj: &Trajectory, x: &[f64], labels: &[u32], t: usize) -> f64 {
    let b = &traj.batches[t];
    let y: Vec<u32> = b.iter().map(|&i| labels[i]).collect();
    net.loss_grad(&traj.params[t], &rows(x, net.sizes[0], b), &y, false)
        .0
}

/// ∂L_t/∂x for every training input (rows of `x`), by reverse accumulation through the t
/// unrolled SGD steps (module docs): through the updates only, plus the direct dependence of
/// L_t on the inputs of B_t when `include_direct`.
pub fn unrolled_input_gradient(
    net: &SmallMlp,
    traj: &Trajectory,
    x: &[f64],
    labels: &[u32],
    t: usize,
    include_direct: bool,
) -> Vec<f64> {
    let d = net.sizes[0];
    let mut gx = vec![0.0; x.len()];
    let b = &traj.batches[t];
    let y: Vec<u32> = b.iter().map(|&i| labels[i]).collect();
    let (_, mut lambda, dx, _) = net.loss_grad(&traj.params[t], &rows(x, d, b), &y, include_direct);
    if include_direct {
        for (r, &i) in b.iter().enumerate() {
            for (g, v) in gx[i * d..(i + 1) * d]
                .iter_mut()
                .zip(&dx[r * d..(r + 1) * d])
            {
                *g += v;
            }
        }
    }
    for k in (0..t).rev() {
        let b = &traj.batches[k];
        let y: Vec<u32> = b.iter().map(|&i| labels[i]).collect();
        let p: Vec<Dual> = traj.params[k]
            .iter()
            .zip(&lambda)
            .map(|(&v, &d)| Dual { v, d })
            .collect();
        let xb: Vec<Dual> = rows(x, d, b).into_iter().map(Dual::cst).collect();
        let (_, hp, hx, _) = net.loss_grad(&p, &xb, &y, true);
        for (l, h) in lambda.iter_mut().zip(&hp) {
            *l -= traj.lr * h.d;
        }
        for (r, &i) in b.iter().enumerate() {
            for (g, h) in gx[i * d..(i + 1) * d]
                .iter_mut()
                .zip(&hx[r * d..(r + 1) * d])
            {
                *g -= traj.lr * h.d;
            }
        }
    }
    gx
}

/// ||∇_x ℓ(θ; x_i)||₁ for every example (each example's own loss, no unrolling), and accuracy.
pub fn direct_input_gradient_l1(
    net: &SmallMlp,
    p: &[f64],
    x: &[f64],
    labels: &[u32],
) -> (Vec<f64>, f64) {
    let n = labels.len();
    let d = net.sizes[0];
    let (_, _, dx, correct) = net.loss_grad(p, x, labels, true);
    // dx is the gradient of the mean: scale by n for each example's own loss.
    let norms = dx
        .chunks(d)
        .map(|r| r.iter().map(|v| v.abs()).sum::<f64>() * n as f64)
        .collect();
    (norms, correct as f64 / n.max(1) as f64)
}

/// The loss-sensitivity experiment's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensitivityConfig {
    pub hidden: Vec<usize>,
    pub activation: ActivationKind,
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    /// Measure g^t every this many steps (t = every, 2 every, .. <= T).
    pub every: usize,
    /// Add the direct dependence of L_t on the inputs of its own batch (module docs).
    #[serde(default)]
    pub include_direct: bool,
}

/// One measurement point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SensitivityPoint {
    pub step: usize,
    pub epoch: f64,
    /// Gini of ḡ_x (the unrolled loss-sensitivity averaged over the points so far).
    pub gini_unrolled: f64,
    /// Gini of the running average of the direct input-gradient norms (cheap estimate).
    pub gini_direct: f64,
    pub mean_unrolled: f64,
    pub mean_direct: f64,
    /// Training accuracy at θ_t.
    pub train_accuracy: f64,
}

/// Result of one loss-sensitivity run.
#[derive(Clone, Debug, Serialize)]
pub struct LossSensitivity {
    pub points: Vec<SensitivityPoint>,
    /// ḡ_x at the end, per example.
    pub mean_sensitivity: Vec<f64>,
    pub mean_direct: Vec<f64>,
    pub steps: usize,
    pub parameters: usize,
}

/// Train the small MLP with plain SGD on `data` (flat rows, `classes` classes) and measure the
/// unrolled loss-sensitivity every `cfg.every` steps. Measurement points run in parallel.
pub fn loss_sensitivity(
    data: &DenseDataset,
    classes: usize,
    cfg: &SensitivityConfig,
) -> Result<LossSensitivity> {
    let n = data.labels.len();
    let d = data.per_example();
    if cfg.batch_size == 0 || cfg.batch_size > n {
        return Err(invalid(
            format!("batch size {}", cfg.batch_size),
            format!("must be between 1 and the {n} examples"),
        ));
    }
    if cfg.epochs == 0 || cfg.every == 0 {
        return Err(invalid(
            "loss sensitivity",
            "epochs and the measuring interval must be >= 1",
        ));
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return Err(invalid(
            format!("learning rate {}", cfg.lr),
            "must be > 0 and finite",
        ));
    }
    if let Some(&l) = data.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(invalid(
            format!("label {l}"),
            format!("outside the {classes} classes"),
        ));
    }
    let net = SmallMlp::new(d, &cfg.hidden, classes, cfg.activation)?;
    let x: Vec<f64> = data.x.iter().map(|&v| v as f64).collect();
    let mut sampler = BatchSampler::new(
        SamplingMode::Shuffle,
        n,
        cfg.batch_size,
        Some(mix(cfg.seed, 1)),
    )?;
    let total = sampler.steps_per_epoch() * cfg.epochs;
    let batches: Vec<Vec<usize>> = (0..=total).map(|_| sampler.next_batch()).collect();
    let traj = sgd_trajectory(
        &net,
        net.init(mix(cfg.seed, 0)),
        &x,
        &data.labels,
        batches,
        cfg.lr,
    );
    if traj
        .params
        .last()
        .is_some_and(|p| p.iter().any(|v| !v.is_finite()))
    {
        return Err(invalid(
            format!("learning rate {}", cfg.lr),
            "training diverged (non-finite parameters); lower it",
        ));
    }
    let times: Vec<usize> = (1..=total / cfg.every).map(|k| k * cfg.every).collect();
    // Each point costs t reverse steps; the largest first keeps the threads balanced.
    let mut per_point: Vec<(usize, Vec<f64>, Vec<f64>, f64)> = times
        .par_iter()
        .rev()
        .map(|&t| {
            let g = unrolled_input_gradient(&net, &traj, &x, &data.labels, t, cfg.include_direct);
            let l1: Vec<f64> = g
                .chunks(d)
                .map(|r| r.iter().map(|v| v.abs()).sum())
                .collect();
            let (direct, acc) = direct_input_gradient_l1(&net, &traj.params[t], &x, &data.labels);
            (t, l1, direct, acc)
        })
        .collect();
    per_point.sort_by_key(|p| p.0);
    let spe = (total / cfg.epochs) as f64;
    let mut sum_u = vec![0.0; n];
    let mut sum_d = vec![0.0; n];
    let mut points = Vec::with_capacity(per_point.len());
    for (k, (t, l1, direct, acc)) in per_point.iter().enumerate() {
        for (s, v) in sum_u.iter_mut().zip(l1) {
            *s += v;
        }
        for (s, v) in sum_d.iter_mut().zip(direct) {
            *s += v;
        }
        let c = (k + 1) as f64;
        let avg_u: Vec<f64> = sum_u.iter().map(|s| s / c).collect();
        let avg_d: Vec<f64> = sum_d.iter().map(|s| s / c).collect();
        points.push(SensitivityPoint {
            step: *t,
            epoch: *t as f64 / spe,
            gini_unrolled: gini(&avg_u)?,
            gini_direct: gini(&avg_d)?,
            mean_unrolled: avg_u.iter().sum::<f64>() / n as f64,
            mean_direct: avg_d.iter().sum::<f64>() / n as f64,
            train_accuracy: *acc,
        });
    }
    let c = per_point.len().max(1) as f64;
    Ok(LossSensitivity {
        points,
        mean_sensitivity: sum_u.iter().map(|s| s / c).collect(),
        mean_direct: sum_d.iter().map(|s| s / c).collect(),
        steps: total,
        parameters: net.num_params(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(act: ActivationKind, seed: u64) -> (SmallMlp, Vec<f64>, Vec<u32>, Trajectory) {
        let net = SmallMlp::new(5, &[4, 3], 3, act).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = 8;
        let x: Vec<f64> = (0..n * 5).map(|_| rng.random_range(-1.0..1.0)).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let mut s = BatchSampler::new(SamplingMode::Shuffle, n, 2, Some(seed)).unwrap();
        // 3 epochs of 4 steps, plus the batch of L_12.
        let batches: Vec<Vec<usize>> = (0..13).map(|_| s.next_batch()).collect();
        // A large step so the indirect (through-θ) part is not negligible next to the direct one.
        let traj = sgd_trajectory(&net, net.init(seed), &x, &labels, batches, 0.5);
        (net, x, labels, traj)
    }

    /// Central differences of L_t w.r.t. every input coordinate, re-running the same SGD steps
    /// on the perturbed inputs; L_t itself sees the perturbed inputs only with `direct`.
    fn finite_differences(
        net: &SmallMlp,
        x: &[f64],
        labels: &[u32],
        traj: &Trajectory,
        t: usize,
        direct: bool,
    ) -> Vec<f64> {
        let h = 1e-5;
        (0..x.len())
            .map(|j| {
                let run = |delta: f64| {
                    let mut xp = x.to_vec();
                    xp[j] += delta;
                    let tr = sgd_trajectory(
                        net,
                        traj.params[0].clone(),
                        &xp,
                        labels,
                        traj.batches[..=t].to_vec(),
                        traj.lr,
                    );
                    loss_at(net, &tr, if direct { &xp } else { x }, labels, t)
                };
                (run(h) - run(-h)) / (2.0 * h)
            })
            .collect()
    }

    fn check(act: ActivationKind, seed: u64) {
        let (net, x, labels, traj) = problem(act, seed);
        for (t, direct) in [
            (0usize, true),
            (3, false),
            (3, true),
            (9, false),
            (12, false),
            (12, true),
        ] {
            let got = unrolled_input_gradient(&net, &traj, &x, &labels, t, direct);
            let want = finite_differences(&net, &x, &labels, &traj, t, direct);
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            // Central differences with h = 1e-5 in f64: truncation ~h^2 |f'''| ~ 1e-10 and
            // rounding ~1e-16 / 1e-5 = 1e-11; a wrong Hessian term is off by O(scale).
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-7 * scale.max(1e-3),
                    "{act:?} t {t} direct {direct} coord {j}: unrolled {g} vs finite differences {w} (scale {scale})"
                );
            }
            // Examples that took part in no step before t (nor, with `direct`, in B_t) have no
            // influence; without `direct`, L_0 depends on no earlier input at all.
            let upto = if direct { t + 1 } else { t };
            let involved: Vec<bool> = (0..labels.len())
                .map(|i| traj.batches[..upto].iter().any(|b| b.contains(&i)))
                .collect();
            for (i, inv) in involved.iter().enumerate() {
                if !inv {
                    assert!(got[i * 5..(i + 1) * 5].iter().all(|&v| v == 0.0));
                }
            }
        }
        // The indirect part matters: at t = 12 examples outside B_12 have non-zero gradients.
        let g = unrolled_input_gradient(&net, &traj, &x, &labels, 12, true);
        let outside = (0..8).find(|i| !traj.batches[12].contains(i)).unwrap();
        assert!(
            g[outside * 5..outside * 5 + 5]
                .iter()
                .any(|v| v.abs() > 1e-6)
        );
    }

    #[test]
    fn unrolled_loss_sensitivity_matches_finite_differences_tanh() {
        check(ActivationKind::Tanh, 3);
    }

    #[test]
    fn unrolled_loss_sensitivity_matches_finite_differences_relu() {
        // ReLU is differentiable almost everywhere; at this seed no pre-activation sits within
        // 1e-5 of a kink, so the differences see the same linear pieces.
        check(ActivationKind::Relu, 4);
    }

    #[test]
    fn dual_numbers_differentiate_the_loss_gradient() {
        // The tangent of the gradient in direction v is the Hessian-vector product: check it
        // against differences of gradients.
        let (net, x, labels, traj) = problem(ActivationKind::Sigmoid, 5);
        let p = &traj.params[4];
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let v: Vec<f64> = p.iter().map(|_| rng.random_range(-1.0..1.0)).collect();
        let pd: Vec<Dual> = p
            .iter()
            .zip(&v)
            .map(|(&a, &b)| Dual { v: a, d: b })
            .collect();
        let xd: Vec<Dual> = x.iter().map(|&a| Dual::cst(a)).collect();
        let (_, hv, hx, _) = net.loss_grad(&pd, &xd, &labels, true);
        let h = 1e-6;
        let shifted = |s: f64| {
            let q: Vec<f64> = p.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            let (_, g, dx, _) = net.loss_grad(&q, &x, &labels, true);
            (g, dx)
        };
        let ((gp, xp), (gm, xm)) = (shifted(h), shifted(-h));
        for (k, hvk) in hv.iter().enumerate() {
            let fd = (gp[k] - gm[k]) / (2.0 * h);
            assert!((hvk.d - fd).abs() < 1e-6, "param {k}: {} vs {fd}", hvk.d);
        }
        for (k, hxk) in hx.iter().enumerate() {
            let fd = (xp[k] - xm[k]) / (2.0 * h);
            assert!((hxk.d - fd).abs() < 1e-6, "input {k}: {} vs {fd}", hxk.d);
        }
    }

    #[test]
    fn sensitivity_run_reports_gini_per_point() {
        let img = memaudit_data::digits().unwrap();
        let idx: Vec<usize> = (0..200).collect();
        let sub = img.subset(&idx).unwrap();
        let data = DenseDataset::new(
            sub.to_unit_f32(),
            vec![64],
            sub.labels.iter().map(|&l| l as u32).collect(),
        )
        .unwrap();
        let cfg = SensitivityConfig {
            hidden: vec![8, 8],
            activation: ActivationKind::Relu,
            lr: 0.1,
            batch_size: 10,
            epochs: 2,
            seed: 1,
            every: 10,
            include_direct: false,
        };
        let r = loss_sensitivity(&data, 10, &cfg).unwrap();
        assert_eq!(r.steps, 40);
        assert_eq!(r.points.len(), 4);
        assert_eq!(r.mean_sensitivity.len(), 200);
        for p in &r.points {
            assert!((0.0..1.0).contains(&p.gini_unrolled) && (0.0..1.0).contains(&p.gini_direct));
        }
        assert!(
            loss_sensitivity(
                &data,
                10,
                &SensitivityConfig {
                    batch_size: 0,
                    ..cfg.clone()
                }
            )
            .is_err()
        );
        assert!(loss_sensitivity(&data, 5, &cfg).is_err());
    }
}
