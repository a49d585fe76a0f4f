//! Oracles every layer and model is checked against (used by the engine's tests, and available to
//! anyone adding a layer).
//!
//! - `check_layer_gradients`: the backward (parameter and input gradients) against central finite
//!   differences of the layer's naive f64 `reference_forward`. The f64 differences are exact to
//!   ~1e-9, so the comparison measures only our f32 backward's rounding; tolerance: max |error| <=
//!   1e-4 x max |gradient| (f32 sums of ~10^3-10^4 terms carry ~1e-6 relative error; a wrong
//!   formula is off by O(1)).
//! - `check_layer_per_example`: per-example norms and clipped sums of the fast path against B
//!   separate batch-1 passes, clipped and summed naively (Opacus' per-sample-gradient checker).
//!   Tolerances from the issue: norms within 1e-5 relative, clipped sums max |diff| / max |ref|
//!   within 1e-5, at three clip bounds: the median norm (clips some, not all), below the smallest
//!   (clips all) and above the largest (clips none).
//!
//! In both, the layer's output feeds the per-example loss `L_i = sum(R_i . y_i)` with a fixed random
//! R, so `dL/dy = R`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::compute::NormRule;
use crate::layer::*;
use crate::tensor::Tensor;

fn param_len(layer: &dyn Layer) -> usize {
    layer.params().iter().map(|p| p.len()).sum()
}

/// Initialised parameters for a layer (seeded).
pub fn init_params(layer: &dyn Layer, seed: u64) -> Vec<f32> {
    let mut p = vec![0.0f32; param_len(layer)];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    layer.init(&mut p, &mut rng);
    // Norm layers initialise gamma = 1, beta = 0; perturb so their gradients are generic.
    for v in p.iter_mut() {
        *v += rng.random_range(-0.1f32..0.1);
    }
    p
}

fn eval_forward(layer: &dyn Layer, p: &[f32], x: &Value) -> (Tensor, Cache) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut ctx = ForwardCtx {
        train: false,
        rng: &mut rng,
    };
    layer.forward(p, x, &mut ctx).expect("forward")
}

fn ref_loss(layer: &dyn Layer, p: &[f64], x: &RefValue, r: &[f32]) -> f64 {
    let y = layer.reference_forward(p, x).expect("reference forward");
    let (y, _) = y.dense().expect("dense output");
    y.iter().zip(r).map(|(a, b)| a * (*b as f64)).sum()
}

fn compare(what: &str, got: &[f64], want: &[f64], tol: f64) -> Result<(), String> {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    let mut worst = (0.0f64, 0usize);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        if e > worst.0 || !e.is_finite() {
            worst = (e, k);
        }
    }
    // NaN errors must fail too, hence not `worst.0 > tol * scale`.
    if worst.0.is_nan() || worst.0 > tol * scale {
        return Err(format!(
            "{what}: max |error| {:.3e} at {} (got {:.6e}, want {:.6e}) > {tol:e} x max |ref| {scale:.3e}",
            worst.0, worst.1, got[worst.1], want[worst.1]
        ));
    }
    Ok(())
}

/// Indices to check: all of them if few, else a seeded sample.
fn coords(n: usize, max: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if n <= max {
        (0..n).collect()
    } else {
        (0..max).map(|_| rng.random_range(0..n)).collect()
    }
}

/// Backward vs f64 finite differences (parameters, and the input when it is dense).
pub fn check_layer_gradients(layer: &dyn Layer, x: &Value, seed: u64) -> Result<(), String> {
    let p = init_params(layer, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37);
    let (y, cache) = eval_forward(layer, &p, x);
    let r: Vec<f32> = (0..y.len())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();

    // The f32 forward against the f64 reference.
    let p64: Vec<f64> = p.iter().map(|&v| v as f64).collect();
    let x64 = RefValue::from_value(x);
    let yref = layer
        .reference_forward(&p64, &x64)
        .map_err(|e| e.to_string())?;
    let (yref, yshape) = yref.dense().map_err(|e| e.to_string())?;
    if yshape != y.shape.as_slice() {
        return Err(format!(
            "reference output shape {yshape:?} != forward shape {:?}",
            y.shape
        ));
    }
    let yf: Vec<f64> = y.data.iter().map(|&v| v as f64).collect();
    compare("forward vs f64 reference", &yf, yref, 1e-5)?;

    let dense_input = matches!(x, Value::Dense(_));
    let dy = Tensor {
        data: r.clone(),
        shape: y.shape.clone(),
    };
    let (dx, st) = layer
        .backward(&p, x, &cache, dy, dense_input)
        .map_err(|e| e.to_string())?;
    let mut grad = vec![0.0f32; p.len()];
    layer.add_grads(&p, x, &cache, &st, None, &mut grad);

    let h = 1e-6;
    let ks = coords(p.len(), 400, &mut rng);
    let mut fd = Vec::with_capacity(ks.len());
    for &k in &ks {
        let mut pp = p64.clone();
        pp[k] += h;
        let lp = ref_loss(layer, &pp, &x64, &r);
        pp[k] -= 2.0 * h;
        let lm = ref_loss(layer, &pp, &x64, &r);
        fd.push((lp - lm) / (2.0 * h));
    }
    let an: Vec<f64> = ks.iter().map(|&k| grad[k] as f64).collect();
    compare(
        &format!("{} parameter gradient vs finite differences", layer.kind()),
        &an,
        &fd,
        1e-4,
    )?;

    if let (Some(dx), RefValue::Dense { data, shape }) = (dx, &x64) {
        let ks = coords(data.len(), 300, &mut rng);
        let mut fd = Vec::with_capacity(ks.len());
        for &k in &ks {
            let mut xx = data.clone();
            xx[k] += h;
            let lp = ref_loss(
                layer,
                &p64,
                &RefValue::Dense {
                    data: xx.clone(),
                    shape: shape.clone(),
                },
                &r,
            );
            xx[k] -= 2.0 * h;
            let lm = ref_loss(
                layer,
                &p64,
                &RefValue::Dense {
                    data: xx,
                    shape: shape.clone(),
                },
                &r,
            );
            fd.push((lp - lm) / (2.0 * h));
        }
        let an: Vec<f64> = ks.iter().map(|&k| dx.data[k] as f64).collect();
        compare(
            &format!("{} input gradient vs finite differences", layer.kind()),
            &an,
            &fd,
            1e-4,
        )?;
    }
    Ok(())
}

/// Per-example norms and clipped sums vs B batch-1 passes, for every norm rule in `rules`.
pub fn check_layer_per_example(
    layer: &mut dyn Layer,
    x: &Value,
    seed: u64,
    rules: &[Option<NormRule>],
) -> Result<(), String> {
    let p = init_params(layer, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x51ab);
    let b = x.batch();
    let (y, _) = eval_forward(layer, &p, x);
    let r = Tensor {
        data: (0..y.len())
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect(),
        shape: y.shape.clone(),
    };

    // Oracle: one example at a time, full gradient materialised.
    let mut per_ex: Vec<Vec<f32>> = Vec::with_capacity(b);
    for i in 0..b {
        let xi = x.select(&[i]);
        let (_, ci) = eval_forward(layer, &p, &xi);
        let ri = select_examples(&r, &[i]);
        let (_, sti) = layer
            .backward(&p, &xi, &ci, ri, false)
            .map_err(|e| e.to_string())?;
        let mut gi = vec![0.0f32; p.len()];
        layer.add_grads(&p, &xi, &ci, &sti, None, &mut gi);
        per_ex.push(gi);
    }
    let norms_ref: Vec<f64> = per_ex
        .iter()
        .map(|g| g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();

    for &rule in rules {
        layer.set_norm_rule(rule);
        let (_, cache) = eval_forward(layer, &p, x);
        let (_, st) = layer
            .backward(&p, x, &cache, r.clone(), false)
            .map_err(|e| e.to_string())?;
        let mut sq = vec![0.0f32; b];
        layer.add_sq_norms(&p, x, &cache, &st, &mut sq);
        let norms: Vec<f64> = sq.iter().map(|v| (*v as f64).max(0.0).sqrt()).collect();
        for i in 0..b {
            let rel = (norms[i] - norms_ref[i]).abs() / norms_ref[i].max(1e-12);
            if rel.is_nan() || rel > 1e-5 {
                return Err(format!(
                    "{} ({rule:?}): example {i} norm {} vs batch-1 {} (relative error {rel:.2e} > 1e-5)",
                    layer.kind(),
                    norms[i],
                    norms_ref[i]
                ));
            }
        }
        let mut sorted = norms_ref.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = sorted[b / 2];
        for clip in [median, sorted[0] * 0.5, sorted[b - 1] * 2.0] {
            let factors: Vec<f32> = norms
                .iter()
                .map(|n| (clip / n.max(1e-12)).min(1.0) as f32)
                .collect();
            let mut fast = vec![0.0f32; p.len()];
            layer.add_grads(&p, x, &cache, &st, Some(&factors), &mut fast);
            let mut want = vec![0.0f64; p.len()];
            for (i, g) in per_ex.iter().enumerate() {
                let c = (clip / norms_ref[i].max(1e-12)).min(1.0);
                for (w, v) in want.iter_mut().zip(g) {
                    *w += c * *v as f64;
                }
            }
            let got: Vec<f64> = fast.iter().map(|&v| v as f64).collect();
            compare(
                &format!("{} ({rule:?}) clipped sum at C = {clip:.4}", layer.kind()),
                &got,
                &want,
                1e-5,
            )?;
        }
    }
    layer.set_norm_rule(None);
    Ok(())
}

/// A dense random tensor (seeded), values in [-1, 1).
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor {
        data: (0..shape.iter().product())
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect(),
        shape: shape.to_vec(),
    }
}

/// Model-level oracle: per-example norms and clipped sums of `Model::gradients` against B
/// batch-1 passes (evaluation mode), at the median, below-min and above-max clip bounds.
pub fn check_model_per_example(
    model: &crate::model::Model,
    params: &[f32],
    batch: &crate::model::Batch,
) -> Result<(), String> {
    use crate::model::{Clipping, GradRequest};
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let b = batch.len();
    let mut per_ex = Vec::with_capacity(b);
    for i in 0..b {
        let bi = batch.select(&[i]);
        let out = model
            .gradients(
                params,
                &bi,
                GradRequest {
                    clipping: None,
                    input_grad: false,
                    train: false,
                    rng: &mut rng,
                },
            )
            .map_err(|e| e.to_string())?;
        per_ex.push(out.grad);
    }
    let norms_ref: Vec<f64> = per_ex
        .iter()
        .map(|g| g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut sorted = norms_ref.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for clip in [sorted[b / 2], sorted[0] * 0.5, sorted[b - 1] * 2.0] {
        let clipping = Clipping::Flat(clip as f32);
        let out = model
            .gradients(
                params,
                batch,
                GradRequest {
                    clipping: Some(&clipping),
                    input_grad: false,
                    train: false,
                    rng: &mut rng,
                },
            )
            .map_err(|e| e.to_string())?;
        let norms = out.norms.unwrap();
        for i in 0..b {
            let rel = (norms[i] as f64 - norms_ref[i]).abs() / norms_ref[i].max(1e-12);
            if rel.is_nan() || rel > 1e-5 {
                return Err(format!(
                    "example {i}: norm {} vs batch-1 {} (relative error {rel:.2e} > 1e-5)",
                    norms[i], norms_ref[i]
                ));
            }
        }
        let mut want = vec![0.0f64; params.len()];
        for (i, g) in per_ex.iter().enumerate() {
            let c = (clip / norms_ref[i].max(1e-12)).min(1.0);
            for (w, v) in want.iter_mut().zip(g) {
                *w += c * *v as f64;
            }
        }
        let got: Vec<f64> = out.grad.iter().map(|&v| v as f64).collect();
        compare(
            &format!("model clipped sum at C = {clip:.4}"),
            &got,
            &want,
            1e-5,
        )?;
    }
    Ok(())
}

/// Model-level finite differences: the summed loss's gradient (parameters and, for dense input,
/// the input) against central differences of the f64 reference forward.
pub fn check_model_gradients(
    model: &crate::model::Model,
    params: &[f32],
    batch: &crate::model::Batch,
    seed: u64,
) -> Result<(), String> {
    use crate::model::GradRequest;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dense = matches!(batch.input, Value::Dense(_));
    let out = model
        .gradients(
            params,
            batch,
            GradRequest {
                clipping: None,
                input_grad: dense,
                train: false,
                rng: &mut rng,
            },
        )
        .map_err(|e| e.to_string())?;
    let p64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
    let lref = model
        .reference_loss(&p64, batch)
        .map_err(|e| e.to_string())?;
    if (lref - out.loss_sum).abs() > 1e-4 * lref.abs().max(1.0) {
        return Err(format!("loss {} vs f64 reference {lref}", out.loss_sum));
    }
    let h = 1e-6;
    let ks = coords(params.len(), 300, &mut rng);
    let mut fd = Vec::new();
    for &k in &ks {
        let mut pp = p64.clone();
        pp[k] += h;
        let a = model.reference_loss(&pp, batch).unwrap();
        pp[k] -= 2.0 * h;
        let b = model.reference_loss(&pp, batch).unwrap();
        fd.push((a - b) / (2.0 * h));
    }
    let an: Vec<f64> = ks.iter().map(|&k| out.grad[k] as f64).collect();
    compare(
        "model parameter gradient vs finite differences",
        &an,
        &fd,
        1e-4,
    )?;
    if let (Some(dx), Value::Dense(x)) = (out.input_grad, &batch.input) {
        let ks = coords(x.len(), 200, &mut rng);
        let mut fd = Vec::new();
        for &k in &ks {
            let mut xx: Vec<f64> = x.data.iter().map(|&v| v as f64).collect();
            xx[k] += h;
            let a = ref_loss_with_input(model, &p64, &xx, &x.shape, batch)?;
            xx[k] -= 2.0 * h;
            let b = ref_loss_with_input(model, &p64, &xx, &x.shape, batch)?;
            fd.push((a - b) / (2.0 * h));
        }
        let an: Vec<f64> = ks.iter().map(|&k| dx.data[k] as f64).collect();
        compare("model input gradient vs finite differences", &an, &fd, 1e-4)?;
    }
    Ok(())
}

fn ref_loss_with_input(
    model: &crate::model::Model,
    p: &[f64],
    x: &[f64],
    shape: &[usize],
    batch: &crate::model::Batch,
) -> Result<f64, String> {
    let mut cur = RefValue::Dense {
        data: x.to_vec(),
        shape: shape.to_vec(),
    };
    for li in 0..model.num_layers() {
        cur = model
            .layer(li)
            .reference_forward(&p[model.param_range(li)], &cur)
            .map_err(|e| e.to_string())?;
    }
    let (logits, s) = cur.dense().map_err(|e| e.to_string())?;
    Ok(crate::loss::reference_loss(
        logits,
        s,
        &batch.targets,
        batch.mask.as_deref(),
    ))
}
