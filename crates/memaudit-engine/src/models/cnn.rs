//! Convolutional models. (Being written: see the conv-family layers.)

use crate::error::{EngineError, Result};
use crate::model::Model;

pub(crate) fn build_tutorial_cnn(
    _channels: usize,
    _height: usize,
    _width: usize,
    _classes: usize,
) -> Result<Model> {
    Err(EngineError::Config(
        "the tutorial CNN is not built yet".into(),
    ))
}

pub(crate) fn build_groupnorm_cnn(
    _channels: usize,
    _height: usize,
    _width: usize,
    _classes: usize,
) -> Result<Model> {
    Err(EngineError::Config(
        "the GroupNorm CNN is not built yet".into(),
    ))
}
