//! Recurrent language models. (Being written: see the recurrent layers.)

use crate::error::{EngineError, Result};
use crate::model::Model;

pub(crate) fn build_lstm_lm(
    _vocab: usize,
    _embed: usize,
    _hidden: usize,
    _layers: usize,
    _dropout: f32,
) -> Result<Model> {
    Err(EngineError::Config("the LSTM LM is not built yet".into()))
}

pub(crate) fn build_gru_lm(
    _vocab: usize,
    _embed: usize,
    _hidden: usize,
    _layers: usize,
    _dropout: f32,
) -> Result<Model> {
    Err(EngineError::Config("the GRU LM is not built yet".into()))
}
