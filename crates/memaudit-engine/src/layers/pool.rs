//! Max and average pooling over `[B, C, H, W]` (square window, stride, symmetric zero padding of
//! at most half the window, PyTorch's `ceil_mode=False` output size
//! `floor((in + 2 pad - k) / stride) + 1`). No parameters, so no per-example rule: each example's
//! output depends on its own input only.
//!
//! Max pooling's gradient goes to the first maximal cell of each window (padding never wins);
//! average pooling divides by `k^2` (`count_include_pad`, PyTorch's default) or by the number of
//! cells inside the image (TF's `'same'` behaviour).

use crate::compute::conv::{self as cc, ConvGeom, Padding, Scratch, ScratchPool};
use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::tensor::Tensor;

/// Window geometry shared by both pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Window {
    fn new(what: &str, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        if kernel == 0 || stride == 0 || padding > kernel / 2 {
            return Err(EngineError::Config(format!(
                "{what} needs kernel >= 1, stride >= 1 and padding <= kernel / 2 (got kernel \
                 {kernel}, stride {stride}, padding {padding})"
            )));
        }
        Ok(Self {
            kernel,
            stride,
            padding,
        })
    }

    fn geometry(&self, what: &str, input: &[usize]) -> Result<ConvGeom> {
        match input {
            [_, _, h, w] => ConvGeom::new(
                *h,
                *w,
                self.kernel,
                self.stride,
                Padding::Explicit(self.padding),
            ),
            _ => Err(EngineError::Shape(format!(
                "{what} expects [B, C, H, W], got {input:?}"
            ))),
        }
    }

    fn out_shape(&self, what: &str, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geometry(what, input)?;
        Ok(vec![input[0], input[1], g.out_h, g.out_w])
    }

    /// The window's cells inside the image for output (oy, ox), for the naive reference forwards.
    fn cells(&self, oy: usize, ox: usize, h: usize, w: usize) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for ky in 0..self.kernel {
            for kx in 0..self.kernel {
                let iy = (oy * self.stride + ky) as isize - self.padding as isize;
                let ix = (ox * self.stride + kx) as isize - self.padding as isize;
                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                    v.push((iy as usize, ix as usize));
                }
            }
        }
        v
    }

    /// Naive f64 pooling: `reduce(window values, window size)` per output cell.
    fn reference(
        &self,
        what: &str,
        x: &RefValue,
        reduce: &dyn Fn(&[f64]) -> f64,
    ) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        let out = self.out_shape(what, shape)?;
        let (h, w) = (shape[2], shape[3]);
        let (oh, ow) = (out[2], out[3]);
        let planes = shape[0] * shape[1];
        let mut y = Vec::with_capacity(planes * oh * ow);
        for pl in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let vals: Vec<f64> = self
                        .cells(oy, ox, h, w)
                        .into_iter()
                        .map(|(iy, ix)| data[(pl * h + iy) * w + ix])
                        .collect();
                    y.push(reduce(&vals));
                }
            }
        }
        Ok(RefValue::Dense {
            data: y,
            shape: out,
        })
    }
}

/// Max pooling.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    win: Window,
    /// Argmax buffers, recycled across steps (see `ScratchPool`).
    scratch: ScratchPool<u32>,
}

impl MaxPool2d {
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            win: Window::new("max pooling", kernel, stride, padding)?,
            scratch: ScratchPool::default(),
        })
    }
}

/// Max pooling's cache: each output's argmax within its input plane.
struct ArgMax {
    arg: Scratch<u32>,
    geom: ConvGeom,
}

impl Layer for MaxPool2d {
    crate::no_parameter_gradients!();

    fn kind(&self) -> &'static str {
        "maxpool2d"
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.win.out_shape("max pooling", input)
    }

    fn forward(&self, _p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let x = x.dense()?;
        let geom = self.win.geometry("max pooling", &x.shape)?;
        let shape = self.out_shape(&x.shape)?;
        let mut y = Tensor::zeros(&shape);
        let mut arg = self.scratch.take(y.len());
        cc::max_pool_forward(&x.data, &geom, &mut y.data, &mut arg);
        Ok((y, Box::new(ArgMax { arg, geom })))
    }

    fn backward(
        &self,
        _p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        if !need_dx {
            return Ok((None, nothing()));
        }
        let c = downcast::<ArgMax>(cache, "maxpool2d");
        let mut dx = Tensor::zeros(&x.dense()?.shape);
        cc::max_pool_backward(&dy.data, &c.arg, &c.geom, &mut dx.data);
        Ok((Some(dx), nothing()))
    }

    fn reference_forward(&self, _p: &[f64], x: &RefValue) -> Result<RefValue> {
        self.win.reference("max pooling", x, &|v| {
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        })
    }
}

/// Average pooling.
#[derive(Clone, Debug)]
pub struct AvgPool2d {
    win: Window,
    /// Divide by `kernel^2` even where the window overlaps the padding (PyTorch's default).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    pub fn new(
        kernel: usize,
        stride: usize,
        padding: usize,
        count_include_pad: bool,
    ) -> Result<Self> {
        Ok(Self {
            win: Window::new("average pooling", kernel, stride, padding)?,
            count_include_pad,
        })
    }
}

impl Layer for AvgPool2d {
    crate::no_parameter_gradients!();

    fn kind(&self) -> &'static str {
        "avgpool2d"
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        self.win.out_shape("average pooling", input)
    }

    fn forward(&self, _p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let x = x.dense()?;
        let geom = self.win.geometry("average pooling", &x.shape)?;
        let mut y = Tensor::zeros(&self.out_shape(&x.shape)?);
        cc::avg_pool_forward(&x.data, &geom, self.count_include_pad, &mut y.data);
        Ok((y, Box::new(geom)))
    }

    fn backward(
        &self,
        _p: &[f32],
        x: &Value,
        cache: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        if !need_dx {
            return Ok((None, nothing()));
        }
        let geom = downcast::<ConvGeom>(cache, "avgpool2d");
        let mut dx = Tensor::zeros(&x.dense()?.shape);
        cc::avg_pool_backward(&dy.data, geom, self.count_include_pad, &mut dx.data);
        Ok((Some(dx), nothing()))
    }

    fn reference_forward(&self, _p: &[f64], x: &RefValue) -> Result<RefValue> {
        let full = (self.win.kernel * self.win.kernel) as f64;
        let include = self.count_include_pad;
        self.win.reference("average pooling", x, &|v| {
            let n = if include { full } else { v.len() as f64 };
            v.iter().sum::<f64>() / n
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn check(layer: &mut dyn Layer, shape: &[usize], seed: u64) {
        let x = Value::Dense(random_tensor(shape, seed));
        check_layer_gradients(layer, &x, seed + 1).unwrap();
        // No parameters: this checks that batch-1 passes agree with the batch (norms are all 0).
        check_layer_per_example(layer, &x, seed + 2, &[None]).unwrap();
    }

    #[test]
    fn max_pool_matches_finite_differences() {
        // The tutorial CNN's MaxPool(2, stride 1), a non-overlapping 2x2, and a padded 3x3.
        check(&mut MaxPool2d::new(2, 1, 0).unwrap(), &[3, 2, 5, 6], 1);
        check(&mut MaxPool2d::new(2, 2, 0).unwrap(), &[2, 3, 7, 6], 2);
        check(&mut MaxPool2d::new(3, 2, 1).unwrap(), &[2, 2, 7, 5], 3);
    }

    #[test]
    fn avg_pool_matches_finite_differences() {
        check(
            &mut AvgPool2d::new(2, 2, 0, true).unwrap(),
            &[3, 2, 6, 7],
            4,
        );
        check(
            &mut AvgPool2d::new(3, 2, 1, true).unwrap(),
            &[2, 2, 7, 5],
            5,
        );
        check(
            &mut AvgPool2d::new(3, 1, 1, false).unwrap(),
            &[2, 3, 4, 5],
            6,
        );
    }

    #[test]
    fn max_pool_values_and_argmax_routing() {
        // One 3x3 plane, 2x2 windows with stride 1.
        let x = Value::Dense(
            Tensor::new((0..9).map(|v| v as f32).collect(), vec![1, 1, 3, 3]).unwrap(),
        );
        let l = MaxPool2d::new(2, 1, 0).unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut ctx = ForwardCtx {
            train: false,
            rng: &mut rng,
        };
        let (y, c) = l.forward(&[], &x, &mut ctx).unwrap();
        assert_eq!(y.data, vec![4.0, 5.0, 7.0, 8.0]);
        let (dx, _) = l.backward(&[], &x, &c, y.clone(), true).unwrap();
        assert_eq!(
            dx.unwrap().data,
            vec![0.0, 0.0, 0.0, 0.0, 4.0, 5.0, 0.0, 7.0, 8.0]
        );
    }

    #[test]
    fn max_pool_propagates_nan() {
        // A diverged activation must reach the loss (so training stops), whatever its position.
        for (stride, pad) in [(1, 0), (2, 0), (2, 1)] {
            let l = MaxPool2d::new(2, stride, pad).unwrap();
            // Cells 0, 3 and 4 lie in some window of every configuration here.
            for at in [0, 3, 4] {
                let mut data: Vec<f32> = (0..9).map(|v| v as f32).collect();
                data[at] = f32::NAN;
                let x = Value::Dense(Tensor::new(data, vec![1, 1, 3, 3]).unwrap());
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
                let mut ctx = ForwardCtx {
                    train: false,
                    rng: &mut rng,
                };
                let (y, _) = l.forward(&[], &x, &mut ctx).unwrap();
                assert!(
                    y.data.iter().any(|v| v.is_nan()),
                    "s{stride} p{pad} NaN at {at}"
                );
            }
        }
    }

    #[test]
    fn empty_batch_and_bad_config() {
        let x = Value::Dense(random_tensor(&[0, 2, 4, 4], 1));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        for l in [
            Box::new(MaxPool2d::new(2, 2, 0).unwrap()) as Box<dyn Layer>,
            Box::new(AvgPool2d::new(2, 2, 1, false).unwrap()),
        ] {
            let mut ctx = ForwardCtx {
                train: true,
                rng: &mut rng,
            };
            let (y, c) = l.forward(&[], &x, &mut ctx).unwrap();
            assert_eq!(y.shape[0], 0);
            let (dx, _) = l.backward(&[], &x, &c, y, true).unwrap();
            assert_eq!(dx.unwrap().shape, vec![0, 2, 4, 4]);
        }
        assert!(MaxPool2d::new(2, 1, 2).is_err());
        assert!(AvgPool2d::new(0, 1, 0, true).is_err());
        let l = MaxPool2d::new(3, 1, 0).unwrap();
        assert!(l.out_shape(&[1, 1, 2, 2]).is_err());
        assert!(l.out_shape(&[1, 4]).is_err());
    }
}
