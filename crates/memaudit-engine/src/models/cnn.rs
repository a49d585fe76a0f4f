//! Convolutional models.
//!
//! **Tutorial CNN**: the MNIST model of TensorFlow Privacy's DP-SGD tutorial
//! (`tutorials/mnist_dpsgd_tutorial_keras.py`):
//!
//! | layer | output (1x28x28 input) | parameters |
//! |---|---|---|
//! | Conv 16 @ 8x8, stride 2, TF `'same'` (pads 3 each side) + ReLU | 16x14x14 | 1,040 |
//! | MaxPool 2x2, stride 1 | 16x13x13 | 0 |
//! | Conv 32 @ 4x4, stride 2, `'valid'` + ReLU | 32x5x5 | 8,224 |
//! | MaxPool 2x2, stride 1 | 32x4x4 | 0 |
//! | Flatten -> Linear 32 + ReLU | 32 | 16,416 |
//! | Linear classes | 10 | 330 |
//!
//! 26,010 parameters for MNIST, as Keras' `model.summary()` reports for the tutorial. (Keras
//! flattens channels-last, we flatten channels-first: same function class and count, but weights
//! copied from Keras need the first dense layer's rows permuted.)
//!
//! **GroupNorm CNN**: a wider VGG-style net for the memorization attacks (Song et al. need
//! capacity; their ResNet had 466k parameters). Three conv blocks, each
//! `Conv 3x3 (pad 1, no bias: GroupNorm's shift replaces it) -> GroupNorm(8 groups) -> ReLU ->
//! MaxPool 2x2/2`, widths 32, 64, 128, then `Linear 320 + ReLU -> Linear classes`:
//!
//! | layer | output (1x28x28 input) | parameters |
//! |---|---|---|
//! | Conv 32 + GN + ReLU + pool | 32x14x14 | 288 + 64 |
//! | Conv 64 + GN + ReLU + pool | 64x7x7 | 18,432 + 128 |
//! | Conv 128 + GN + ReLU + pool | 128x3x3 | 73,728 + 256 |
//! | Flatten -> Linear 320 + ReLU | 320 | 368,960 |
//! | Linear classes | 10 | 3,210 |
//!
//! 465,066 parameters for MNIST; about 7.9 M multiply-adds per example forward (most in the two
//! wider convs), so an epoch of MNIST is a few TFLOP: minutes on 2 cores. Most parameters sit in
//! the dense layer, where memorization capacity is cheap in FLOPs.

use crate::error::{EngineError, Result};
use crate::layer::Layer;
use crate::layers::{
    Activation, ActivationKind, Conv2d, Flatten, GroupNorm, Linear, MaxPool2d, Padding,
};
use crate::model::Model;

/// Layers plus the shape after the last one, so builders can size the dense head and report a
/// too-small input with the layer that failed.
struct Stack {
    layers: Vec<(String, Box<dyn Layer>)>,
    shape: Vec<usize>,
    model: &'static str,
    input: [usize; 3],
}

impl Stack {
    fn new(model: &'static str, channels: usize, height: usize, width: usize) -> Result<Self> {
        if channels == 0 || height == 0 || width == 0 {
            return Err(EngineError::Config(format!(
                "{model} needs channels, height and width >= 1 (got {channels}x{height}x{width})"
            )));
        }
        Ok(Self {
            layers: Vec::new(),
            shape: vec![1, channels, height, width],
            model,
            input: [channels, height, width],
        })
    }

    fn push(&mut self, name: &str, layer: Box<dyn Layer>) -> Result<()> {
        self.shape = layer.out_shape(&self.shape).map_err(|e| {
            let [c, h, w] = self.input;
            EngineError::Config(format!(
                "{} cannot take a {c}x{h}x{w} input: layer {name} gets shape {:?} ({e}); use a \
                 larger image",
                self.model, self.shape
            ))
        })?;
        self.layers.push((name.to_string(), layer));
        Ok(())
    }

    /// Features after flattening.
    fn features(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

fn relu() -> Box<dyn Layer> {
    Box::new(Activation::new(ActivationKind::Relu))
}

fn check_classes(model: &str, classes: usize) -> Result<()> {
    if classes < 2 {
        return Err(EngineError::Config(format!(
            "{model} needs classes >= 2, got {classes}"
        )));
    }
    Ok(())
}

pub(crate) fn build_tutorial_cnn(
    channels: usize,
    height: usize,
    width: usize,
    classes: usize,
) -> Result<Model> {
    check_classes("tutorial CNN", classes)?;
    let mut s = Stack::new("tutorial CNN", channels, height, width)?;
    s.push(
        "conv1",
        Box::new(Conv2d::new(channels, 16, 8, 2, Padding::Same, true)?),
    )?;
    s.push("relu1", relu())?;
    s.push("pool1", Box::new(MaxPool2d::new(2, 1, 0)?))?;
    s.push(
        "conv2",
        Box::new(Conv2d::new(16, 32, 4, 2, Padding::Valid, true)?),
    )?;
    s.push("relu2", relu())?;
    s.push("pool2", Box::new(MaxPool2d::new(2, 1, 0)?))?;
    s.push("flatten", Box::new(Flatten))?;
    let f = s.features();
    s.push("fc1", Box::new(Linear::new(f, 32, true)))?;
    s.push("relu3", relu())?;
    s.push("fc2", Box::new(Linear::new(32, classes, true)))?;
    Model::new(s.layers)
}

/// Conv widths of the GroupNorm CNN's three blocks.
pub(crate) const GN_WIDTHS: [usize; 3] = [32, 64, 128];
/// GroupNorm groups in every block (Wu & He's default is 32; 8 keeps 4+ channels per group in the
/// narrowest block).
pub(crate) const GN_GROUPS: usize = 8;
/// Width of the dense hidden layer.
pub(crate) const GN_HIDDEN: usize = 320;

pub(crate) fn build_groupnorm_cnn(
    channels: usize,
    height: usize,
    width: usize,
    classes: usize,
) -> Result<Model> {
    check_classes("GroupNorm CNN", classes)?;
    let mut s = Stack::new("GroupNorm CNN", channels, height, width)?;
    let mut prev = channels;
    for (i, &w) in GN_WIDTHS.iter().enumerate() {
        let n = i + 1;
        s.push(
            &format!("conv{n}"),
            Box::new(Conv2d::new(prev, w, 3, 1, Padding::Explicit(1), false)?),
        )?;
        s.push(&format!("gn{n}"), Box::new(GroupNorm::new(GN_GROUPS, w)?))?;
        s.push(&format!("relu{n}"), relu())?;
        s.push(&format!("pool{n}"), Box::new(MaxPool2d::new(2, 2, 0)?))?;
        prev = w;
    }
    s.push("flatten", Box::new(Flatten))?;
    let f = s.features();
    s.push("fc1", Box::new(Linear::new(f, GN_HIDDEN, true)))?;
    s.push("relu_fc", relu())?;
    s.push("fc2", Box::new(Linear::new(GN_HIDDEN, classes, true)))?;
    Model::new(s.layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_cnn_has_the_keras_parameter_count() {
        let m = build_tutorial_cnn(1, 28, 28, 10).unwrap();
        assert_eq!(m.num_params(), 26_010);
        let names: Vec<&str> = m.param_specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias"
            ]
        );
        assert_eq!(m.param_specs()[4].shape, vec![32, 512]);
    }

    #[test]
    fn groupnorm_cnn_has_over_400k_parameters() {
        let m = build_groupnorm_cnn(1, 28, 28, 10).unwrap();
        assert_eq!(m.num_params(), 465_066);
        // CIFAR-sized input works too (4x4 after three pools).
        let m = build_groupnorm_cnn(3, 32, 32, 10).unwrap();
        assert_eq!(
            m.param_specs()[m.param_specs().len() - 4].shape,
            vec![320, 2048]
        );
    }

    #[test]
    fn too_small_inputs_are_config_errors() {
        assert!(build_tutorial_cnn(1, 12, 12, 10).is_err());
        assert!(build_tutorial_cnn(1, 14, 14, 10).is_ok());
        assert!(build_groupnorm_cnn(1, 7, 7, 10).is_err());
        assert!(build_groupnorm_cnn(1, 8, 8, 10).is_ok());
        assert!(build_tutorial_cnn(0, 28, 28, 10).is_err());
        assert!(build_groupnorm_cnn(1, 28, 28, 1).is_err());
    }
}
