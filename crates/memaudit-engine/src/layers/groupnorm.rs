//! Group normalisation (Wu & He 2018, "Group Normalization") of `[B, C, H, W]` (or `[B, C]`,
//! any trailing spatial dims): the C channels are split into `groups` consecutive groups; each
//! example's group is normalised by its own mean and biased variance over its channels and pixels,
//! then every channel gets a learned scale gamma[c] and shift beta[c] (eps = 1e-5, as PyTorch's
//! `nn.GroupNorm`). Statistics never cross examples, so per-example gradients stay independent (the
//! reason the engine has GroupNorm and no BatchNorm).
//!
//! Per-example gradients are materialised: example i's `d gamma[c] = sum_hw g . xhat`,
//! `d beta[c] = sum_hw g` (2C floats), computed in the same per-example pass as the input gradient.

use rayon::prelude::*;

use crate::compute::conv::{Scratch, ScratchPool, add_scaled_row_sum};
use crate::compute::{self};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::params::ParamKind;
use crate::tensor::Tensor;

/// PyTorch's default epsilon.
pub const GROUP_NORM_EPS: f32 = 1e-5;

#[derive(Clone, Debug)]
pub struct GroupNorm {
    pub groups: usize,
    pub channels: usize,
    pub eps: f32,
    /// Normalised-input caches, recycled across steps (see `ScratchPool`).
    scratch: ScratchPool,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize) -> Result<Self> {
        if groups == 0 || channels == 0 || !channels.is_multiple_of(groups) {
            return Err(EngineError::Config(format!(
                "group norm needs groups >= 1 dividing channels (got {groups} groups, {channels} \
                 channels)"
            )));
        }
        Ok(Self {
            groups,
            channels,
            eps: GROUP_NORM_EPS,
            scratch: ScratchPool::default(),
        })
    }

    /// Pixels per channel for an input shape.
    fn spatial(&self, shape: &[usize]) -> Result<usize> {
        if shape.len() < 2 || shape[1] != self.channels {
            return Err(EngineError::Shape(format!(
                "group norm expects [B, {}, ...], got {shape:?}",
                self.channels
            )));
        }
        Ok(shape[2..].iter().product())
    }
}

/// Forward cache: normalised input and 1 / sqrt(var + eps) per (example, group).
struct GnCache {
    xhat: Scratch,
    rstd: Vec<f32>,
}

/// Per-example parameter gradients `[B, 2C]` (gamma's then beta's, the parameter layout).
struct GnGrad {
    per_example: Vec<f32>,
}

impl Layer for GroupNorm {
    fn kind(&self) -> &'static str {
        "groupnorm"
    }

    fn params(&self) -> Vec<ParamDesc> {
        vec![
            ParamDesc::new("weight", vec![self.channels], ParamKind::NormScale),
            ParamDesc::new("bias", vec![self.channels], ParamKind::NormShift),
        ]
    }

    fn init(&self, p: &mut [f32], _rng: &mut dyn rand::RngCore) {
        let (g, b) = p.split_at_mut(self.channels);
        g.fill(1.0);
        b.fill(0.0);
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.spatial(input)?;
        Ok(input.to_vec())
    }

    fn forward(&self, p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let x = x.dense()?;
        let hw = self.spatial(&x.shape)?;
        let (c, groups) = (self.channels, self.groups);
        let cpg = c / groups;
        let (gamma, beta) = p.split_at(c);
        let b = x.shape[0];
        let mut y = Tensor::zeros(&x.shape);
        let mut xhat = self.scratch.take(x.len());
        let mut rstd = vec![0.0f32; b * groups];
        let group_len = cpg * hw;
        if group_len > 0 {
            // One task per (example, group): its elements are contiguous in NCHW.
            y.data
                .par_chunks_mut(group_len)
                .zip(xhat.par_chunks_mut(group_len))
                .zip(rstd.par_iter_mut())
                .zip(x.data.par_chunks(group_len))
                .enumerate()
                .for_each(|(k, (((yg, hg), rs), xg))| {
                    let n = group_len as f32;
                    let mean = xg.iter().sum::<f32>() / n;
                    let var = xg.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                    let r = 1.0 / (var + self.eps).sqrt();
                    *rs = r;
                    let c0 = (k % groups) * cpg;
                    for cc in 0..cpg {
                        let (ga, be) = (gamma[c0 + cc], beta[c0 + cc]);
                        for j in cc * hw..(cc + 1) * hw {
                            let h = (xg[j] - mean) * r;
                            hg[j] = h;
                            yg[j] = ga * h + be;
                        }
                    }
                });
        }
        Ok((y, Box::new(GnCache { xhat, rstd })))
    }

    fn backward(
        &self,
        p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let cch = downcast::<GnCache>(cache, "groupnorm");
        let x = x.dense()?;
        let hw = self.spatial(&x.shape)?;
        let (c, groups) = (self.channels, self.groups);
        let cpg = c / groups;
        let gamma = &p[..c];
        let b = x.shape[0];
        let per = c * hw;
        let mut per_example = vec![0.0f32; b * 2 * c];
        let mut dx = if need_dx {
            Some(Tensor::zeros(&x.shape))
        } else {
            None
        };
        if per > 0 {
            let body = |i: usize, pe: &mut [f32], dxi: Option<&mut [f32]>| {
                let g = &dy.data[i * per..][..per];
                let h = &cch.xhat[i * per..][..per];
                let (dg, db) = pe.split_at_mut(c);
                for ch in 0..c {
                    let (gc, hc) = (&g[ch * hw..][..hw], &h[ch * hw..][..hw]);
                    dg[ch] = gc.iter().zip(hc).map(|(a, b)| a * b).sum();
                    db[ch] = gc.iter().sum();
                }
                let Some(dxi) = dxi else { return };
                // Per group: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat . xhat)), with
                // dxhat = gamma[c] g; both means follow from the per-channel sums above.
                let n = (cpg * hw) as f32;
                for grp in 0..groups {
                    let chans = grp * cpg..(grp + 1) * cpg;
                    let m1 = chans.clone().map(|ch| gamma[ch] * db[ch]).sum::<f32>() / n;
                    let m2 = chans.clone().map(|ch| gamma[ch] * dg[ch]).sum::<f32>() / n;
                    let r = cch.rstd[i * groups + grp];
                    for ch in chans {
                        let ga = gamma[ch];
                        for j in ch * hw..(ch + 1) * hw {
                            dxi[j] = r * (ga * g[j] - m1 - h[j] * m2);
                        }
                    }
                }
            };
            match dx.as_mut() {
                Some(dx) => per_example
                    .par_chunks_mut(2 * c)
                    .zip(dx.data.par_chunks_mut(per))
                    .enumerate()
                    .for_each(|(i, (pe, dxi))| body(i, pe, Some(dxi))),
                None => per_example
                    .par_chunks_mut(2 * c)
                    .enumerate()
                    .for_each(|(i, pe)| body(i, pe, None)),
            }
        }
        Ok((dx, Box::new(GnGrad { per_example })))
    }

    fn add_sq_norms(&self, _p: &[f32], _x: &Value, _c: &Cache, st: &GradState, out: &mut [f32]) {
        let s = downcast::<GnGrad>(st, "groupnorm");
        for (o, pe) in out.iter_mut().zip(s.per_example.chunks(2 * self.channels)) {
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
        let s = downcast::<GnGrad>(st, "groupnorm");
        add_scaled_row_sum(&s.per_example, scale, grad);
    }

    fn reference_forward(&self, p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        let hw = self.spatial(shape)?;
        let (c, groups) = (self.channels, self.groups);
        let cpg = c / groups;
        let eps = self.eps as f64;
        let mut out = vec![0.0f64; data.len()];
        for n in 0..shape[0] {
            for grp in 0..groups {
                let idx = |cc: usize, j: usize| (n * c + grp * cpg + cc) * hw + j;
                let cnt = (cpg * hw) as f64;
                let mut mean = 0.0;
                for cc in 0..cpg {
                    for j in 0..hw {
                        mean += data[idx(cc, j)];
                    }
                }
                mean /= cnt;
                let mut var = 0.0;
                for cc in 0..cpg {
                    for j in 0..hw {
                        var += (data[idx(cc, j)] - mean).powi(2);
                    }
                }
                var /= cnt;
                for cc in 0..cpg {
                    let ch = grp * cpg + cc;
                    for j in 0..hw {
                        out[idx(cc, j)] =
                            p[ch] * (data[idx(cc, j)] - mean) / (var + eps).sqrt() + p[c + ch];
                    }
                }
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
    fn images_match_oracles() {
        // Several groups of several channels; one group (LayerNorm over C, H, W); one channel per
        // group (InstanceNorm); and flat [B, C].
        for (groups, channels, shape, seed) in [
            (3, 6, vec![4, 6, 3, 5], 1),
            (1, 4, vec![3, 4, 2, 3], 2),
            (4, 4, vec![3, 4, 3, 3], 3),
            (2, 6, vec![5, 6], 4),
        ] {
            let mut l = GroupNorm::new(groups, channels).unwrap();
            let x = Value::Dense(random_tensor(&shape, seed));
            check_layer_gradients(&l, &x, seed + 10).unwrap();
            check_layer_per_example(&mut l, &x, seed + 20, &[None]).unwrap();
        }
    }

    #[test]
    fn empty_batch_and_bad_config() {
        let l = GroupNorm::new(2, 4).unwrap();
        let p = init_params(&l, 1);
        let x = Value::Dense(random_tensor(&[0, 4, 3, 3], 1));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: true,
            rng: &mut rng,
        };
        let (y, c) = l.forward(&p, &x, &mut ctx).unwrap();
        let (dx, st) = l.backward(&p, &x, &c, y, true).unwrap();
        assert_eq!(dx.unwrap().shape, vec![0, 4, 3, 3]);
        let mut g = vec![0.0; p.len()];
        l.add_grads(&p, &x, &c, &st, Some(&[]), &mut g);
        assert!(g.iter().all(|&v| v == 0.0));
        assert!(GroupNorm::new(3, 4).is_err() && GroupNorm::new(0, 4).is_err());
        assert!(l.out_shape(&[2, 5, 3, 3]).is_err());
    }
}
