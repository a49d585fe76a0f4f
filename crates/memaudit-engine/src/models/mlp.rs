//! Multi-layer perceptron: [input dropout] -> (Linear -> activation [-> dropout])* -> Linear.

use crate::error::{EngineError, Result};
use crate::layer::Layer;
use crate::layers::{Activation, ActivationKind, Dropout, Linear};
use crate::model::Model;

pub(crate) fn build_mlp(
    input: usize,
    hidden: &[usize],
    classes: usize,
    activation: ActivationKind,
    dropout: f32,
    input_dropout: f32,
) -> Result<Model> {
    if input == 0 || classes < 2 || hidden.contains(&0) {
        return Err(EngineError::Config(format!(
            "mlp needs input >= 1, classes >= 2 and non-zero hidden sizes (got input {input}, hidden {hidden:?}, classes {classes})"
        )));
    }
    let mut layers: Vec<(String, Box<dyn Layer>)> = Vec::new();
    if input_dropout > 0.0 {
        layers.push((
            "input_dropout".into(),
            Box::new(Dropout::new(input_dropout)?),
        ));
    }
    let mut prev = input;
    for (i, &h) in hidden.iter().enumerate() {
        layers.push((format!("fc{}", i + 1), Box::new(Linear::new(prev, h, true))));
        layers.push((
            format!("act{}", i + 1),
            Box::new(Activation::new(activation)),
        ));
        if dropout > 0.0 {
            layers.push((
                format!("dropout{}", i + 1),
                Box::new(Dropout::new(dropout)?),
            ));
        }
        prev = h;
    }
    layers.push((
        format!("fc{}", hidden.len() + 1),
        Box::new(Linear::new(prev, classes, true)),
    ));
    Model::new(layers)
}
