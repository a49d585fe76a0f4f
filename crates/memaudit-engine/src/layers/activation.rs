//! Elementwise activations: ReLU, Tanh, Sigmoid. No parameters, so no per-example rule.
//!
//! Each caches its output: the derivative of all three is a function of the output
//! (ReLU: y > 0; tanh: 1 - y^2; sigmoid: y (1 - y)).

use crate::compute::vmath;
use crate::error::Result;
use crate::layer::*;
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationKind {
    Relu,
    Tanh,
    Sigmoid,
}

#[derive(Clone, Debug)]
pub struct Activation {
    pub kind: ActivationKind,
}

impl Activation {
    pub fn new(kind: ActivationKind) -> Self {
        Self { kind }
    }
}

crate::simd_kernel! {
    fn relu_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

crate::simd_kernel! {
    fn relu_backward(dy: &mut [f32], y: &[f32]) {
        for (d, &v) in dy.iter_mut().zip(y) {
            *d = if v > 0.0 { *d } else { 0.0 };
        }
    }
}

crate::simd_kernel! {
    fn tanh_backward(dy: &mut [f32], y: &[f32]) {
        for (d, &v) in dy.iter_mut().zip(y) {
            *d *= 1.0 - v * v;
        }
    }
}

crate::simd_kernel! {
    fn sigmoid_backward(dy: &mut [f32], y: &[f32]) {
        for (d, &v) in dy.iter_mut().zip(y) {
            *d *= v * (1.0 - v);
        }
    }
}

impl Layer for Activation {
    crate::no_parameter_gradients!();

    fn kind(&self) -> &'static str {
        match self.kind {
            ActivationKind::Relu => "relu",
            ActivationKind::Tanh => "tanh",
            ActivationKind::Sigmoid => "sigmoid",
        }
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward(&self, _p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let mut y = x.dense()?.clone();
        match self.kind {
            ActivationKind::Relu => relu_inplace(&mut y.data),
            ActivationKind::Tanh => vmath::tanh_inplace(&mut y.data),
            ActivationKind::Sigmoid => vmath::sigmoid_inplace(&mut y.data),
        }
        Ok((y.clone(), Box::new(y)))
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
        let y = downcast::<Tensor>(cache, self.kind());
        match self.kind {
            ActivationKind::Relu => relu_backward(&mut dy.data, &y.data),
            ActivationKind::Tanh => tanh_backward(&mut dy.data, &y.data),
            ActivationKind::Sigmoid => sigmoid_backward(&mut dy.data, &y.data),
        }
        Ok((Some(dy), nothing()))
    }

    fn reference_forward(&self, _p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        let f: fn(f64) -> f64 = match self.kind {
            ActivationKind::Relu => |v| v.max(0.0),
            ActivationKind::Tanh => f64::tanh,
            ActivationKind::Sigmoid => |v| 1.0 / (1.0 + (-v).exp()),
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
    fn activations_match_finite_differences() {
        for kind in [
            ActivationKind::Relu,
            ActivationKind::Tanh,
            ActivationKind::Sigmoid,
        ] {
            let layer = Activation::new(kind);
            for shape in [vec![5, 7], vec![3, 4, 6], vec![2, 3, 4, 4]] {
                let x = Value::Dense(random_tensor(&shape, 3));
                check_layer_gradients(&layer, &x, 1).unwrap();
            }
        }
    }
}
