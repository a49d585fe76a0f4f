//! Flatten `[B, C, H, W]` (or any `[B, ...]`) to `[B, C*H*W]`; backward reshapes back.

use crate::error::{EngineError, Result};
use crate::layer::*;
use crate::tensor::Tensor;

#[derive(Clone, Debug, Default)]
pub struct Flatten;

impl Layer for Flatten {
    crate::no_parameter_gradients!();

    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.is_empty() {
            return Err(EngineError::Shape("flatten needs a batch dimension".into()));
        }
        Ok(vec![input[0], input[1..].iter().product()])
    }

    fn forward(&self, _p: &[f32], x: &Value, _ctx: &mut ForwardCtx<'_>) -> Result<(Tensor, Cache)> {
        let t = x.dense()?;
        let shape = self.out_shape(&t.shape)?;
        Ok((
            Tensor {
                data: t.data.clone(),
                shape,
            },
            nothing(),
        ))
    }

    fn backward(
        &self,
        _p: &[f32],
        x: &Value,
        _c: &Cache,
        dy: Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, GradState)> {
        let dx = if need_dx {
            Some(Tensor {
                data: dy.data,
                shape: x.dense()?.shape.clone(),
            })
        } else {
            None
        };
        Ok((dx, nothing()))
    }

    fn reference_forward(&self, _p: &[f64], x: &RefValue) -> Result<RefValue> {
        let (data, shape) = x.dense()?;
        Ok(RefValue::Dense {
            data: data.to_vec(),
            shape: self.out_shape(shape)?,
        })
    }
}
