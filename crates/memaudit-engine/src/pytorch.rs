//! PyTorch interchange: memaudit's models described as PyTorch modules, their parameters under
//! PyTorch's state-dict names, both ways (`memaudit export --format pytorch`, `memaudit import`).
//!
//! An exported folder holds:
//!
//! | file | what |
//! |---|---|
//! | `model.safetensors` | the weights alone, under PyTorch's names (`nn.Embedding`, `nn.LSTM`/`nn.GRU` `weight_ih_l0`..., `nn.Linear`, `nn.Conv2d`, `nn.GroupNorm`) |
//! | `config.json` | family, architecture (memaudit's config), gate order, the PyTorch modules in order, input and output layout, every tensor's name and shape |
//! | `optimizer.safetensors` + `optimizer.json` | the optimizer's moment buffers (`{buffer}.{tensor}`), its settings and step; optional |
//! | `probe.safetensors` | a fixed input and the logits its writer computed: a rebuilt model must reproduce them |
//! | `vocab.json` | language models: tokens (id = index) and the canary scoring rule (written by the caller, see [`ExportVocab`]) |
//!
//! Names: memaudit already names layers as PyTorch modules would be named in an
//! `nn.Sequential(OrderedDict(...))` of the same modules (`conv1.weight`, `fc1.bias`, `gn1.weight`,
//! `embedding.weight`, `output.bias`), so only the recurrent layers are renamed: memaudit keeps
//! one layer per stacked cell (`lstm0.weight_ih`, `lstm1.weight_ih`), PyTorch one multi-layer
//! `nn.LSTM` (`lstm.weight_ih_l0`, `lstm.weight_ih_l1`).
//!
//! Gate order: memaudit's LSTM rows are (i, f, g, o) and its GRU rows (r, z, n), PyTorch's orders
//! (`layers/lstm.rs`, `layers/gru.rs`; the GRU is PyTorch's formulation with `b_hn` inside
//! `r * (.)`), so no rows are permuted. `config.json` states the order and an import refuses any
//! other. Shapes and layouts (`[out, in]` for linear layers, `[out, in, kh, kw]` for kernels,
//! channels-first flattening) are PyTorch's too.
//!
//! Reads are strict: every expected tensor must be present with its exact shape and F32 dtype, and
//! no other tensor may be; a partial load is never accepted.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use thiserror::Error;

use crate::error::EngineError;
use crate::layer::{SparseInput, TokenInput, Value};
use crate::layers::{ActivationKind, GroupNorm};
use crate::models::{GN_GROUPS, GN_HIDDEN, GN_WIDTHS, ModelConfig};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerState, Schedule};
use crate::tensor::Tensor;

/// Format of `config.json` and `optimizer.json`.
pub const FORMAT: &str = "memaudit-pytorch/1";
/// Format of `vocab.json`.
pub const VOCAB_FORMAT: &str = "memaudit-vocab/1";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const VOCAB_FILE: &str = "vocab.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const OPTIMIZER_STATE_FILE: &str = "optimizer.json";
pub const PROBE_FILE: &str = "probe.safetensors";

/// Row blocks of memaudit's (and PyTorch's) LSTM weights, top to bottom.
pub const LSTM_GATE_ORDER: [&str; 4] = ["i", "f", "g", "o"];
/// Row blocks of memaudit's (and PyTorch's) GRU weights, top to bottom.
pub const GRU_GATE_ORDER: [&str; 3] = ["r", "z", "n"];

/// Largest accepted difference between the probe's logits and memaudit's, relative to the
/// largest probe logit (`max |a - b| / max |b|`). Two float32 implementations of the same
/// function differ by summation order only (~1e-7 relative for these sizes); a wrong gate order
/// or layout differs by O(1).
pub const PROBE_TOLERANCE: f64 = 1e-5;

/// Sequence length and batch of the probe for language models.
const PROBE_TOKENS: (usize, usize) = (7, 3);
/// Examples in the probe for dense models.
const PROBE_ROWS: usize = 3;
/// Non-zero features per probe row for sparse models.
const PROBE_SPARSE_NNZ: usize = 8;
const PROBE_SEED: u64 = 0x70_72_6f_62_65;

/// Errors of reading or writing an exported folder; each names the file, and the tensor where
/// one is at fault.
#[derive(Debug, Error)]
pub enum PytorchError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a valid safetensors file: {source}")]
    Safetensors {
        path: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
    #[error("{path}: tensor {tensor} has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: String,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor {tensor} is {found}, expected F32 (call .float() before saving)")]
    Dtype {
        path: String,
        tensor: String,
        found: String,
    },
    #[error("{path}: {}", names_text(.missing, .unexpected))]
    Names {
        path: String,
        /// Expected tensors not in the file, with the shape the model expects.
        missing: Vec<(String, Vec<usize>)>,
        /// Tensors in the file the model does not have, with their shape.
        unexpected: Vec<(String, Vec<usize>)>,
    },
    #[error(
        "{path}: the probe's logits differ from memaudit's by {relative:.3e} relative (tolerance \
         {tolerance:e}): these weights do not compute what their writer computed"
    )]
    Probe {
        path: String,
        relative: f64,
        tolerance: f64,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn names_text(missing: &[(String, Vec<usize>)], unexpected: &[(String, Vec<usize>)]) -> String {
    let list = |v: &[(String, Vec<usize>)]| {
        let mut s: Vec<String> = v
            .iter()
            .take(3)
            .map(|(n, sh)| format!("{n} {sh:?}"))
            .collect();
        if v.len() > 3 {
            s.push(format!("and {} more", v.len() - 3));
        }
        s.join(", ")
    };
    let mut parts = Vec::new();
    if !unexpected.is_empty() {
        parts.push(format!("unexpected tensor(s) {}", list(unexpected)));
    }
    if !missing.is_empty() {
        parts.push(format!("missing tensor(s) {}", list(missing)));
    }
    parts.join("; ") + " (a partial load is refused)"
}

pub type Result<T> = std::result::Result<T, PytorchError>;

fn io_err(path: &Path, source: std::io::Error) -> PytorchError {
    PytorchError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn format_err(path: &Path, msg: impl Into<String>) -> PytorchError {
    PytorchError::Format {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Modules
// ---------------------------------------------------------------------------------------------

/// A PyTorch module: `type` is the `torch.nn` class, the other fields its constructor's keyword
/// arguments (so `getattr(nn, m.pop("type"))(**m)` builds it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TorchModule {
    Embedding {
        num_embeddings: usize,
        embedding_dim: usize,
    },
    /// Multi-layer, time-major (`batch_first=False`), biases on; `dropout` between stacked layers.
    #[serde(rename = "LSTM")]
    Lstm {
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        dropout: f32,
    },
    #[serde(rename = "GRU")]
    Gru {
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        dropout: f32,
    },
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    /// `(left, right, top, bottom)`: TF's `'same'` padding when it is asymmetric.
    ZeroPad2d {
        padding: [usize; 4],
    },
    GroupNorm {
        num_groups: usize,
        num_channels: usize,
        eps: f32,
    },
    LayerNorm {
        normalized_shape: Vec<usize>,
        eps: f32,
    },
    MaxPool2d {
        kernel_size: usize,
        stride: usize,
        padding: usize,
    },
    Flatten {},
    #[serde(rename = "ReLU")]
    Relu {},
    Tanh {},
    Sigmoid {},
    Dropout {
        p: f32,
    },
}

/// A module under its attribute name (the prefix of its tensors' names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedModule {
    pub name: String,
    #[serde(flatten)]
    pub module: TorchModule,
}

/// One parameter tensor under both names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedTensor {
    /// PyTorch's state-dict key, e.g. `lstm.weight_ih_l1`.
    pub pytorch: String,
    /// memaudit's parameter name, e.g. `lstm1.weight_ih`.
    pub memaudit: String,
    pub shape: Vec<usize>,
    /// Start in memaudit's flat parameter vector.
    pub offset: usize,
}

impl MappedTensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

impl TorchModule {
    /// `(pytorch name, memaudit name, shape)` of the module's parameters, in state-dict order.
    fn tensors(&self, name: &str) -> Vec<(String, String, Vec<usize>)> {
        let same = |p: &str, shape: Vec<usize>| {
            let n = format!("{name}.{p}");
            (n.clone(), n, shape)
        };
        match *self {
            TorchModule::Embedding {
                num_embeddings,
                embedding_dim,
            } => vec![same("weight", vec![num_embeddings, embedding_dim])],
            TorchModule::Lstm {
                input_size,
                hidden_size,
                num_layers,
                ..
            } => rnn_tensors(name, 4, input_size, hidden_size, num_layers),
            TorchModule::Gru {
                input_size,
                hidden_size,
                num_layers,
                ..
            } => rnn_tensors(name, 3, input_size, hidden_size, num_layers),
            TorchModule::Linear {
                in_features,
                out_features,
                bias,
            } => {
                let mut v = vec![same("weight", vec![out_features, in_features])];
                if bias {
                    v.push(same("bias", vec![out_features]));
                }
                v
            }
            TorchModule::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                bias,
                ..
            } => {
                let k = kernel_size;
                let mut v = vec![same("weight", vec![out_channels, in_channels, k, k])];
                if bias {
                    v.push(same("bias", vec![out_channels]));
                }
                v
            }
            TorchModule::GroupNorm { num_channels, .. } => vec![
                same("weight", vec![num_channels]),
                same("bias", vec![num_channels]),
            ],
            TorchModule::LayerNorm {
                ref normalized_shape,
                ..
            } => vec![
                same("weight", normalized_shape.clone()),
                same("bias", normalized_shape.clone()),
            ],
            _ => Vec::new(),
        }
    }
}

/// `nn.LSTM` / `nn.GRU` parameters: per layer `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
/// `bias_hh_l{k}`; memaudit's stacked layer `{name}{k}` holds the same four.
fn rnn_tensors(
    name: &str,
    gates: usize,
    input: usize,
    hidden: usize,
    layers: usize,
) -> Vec<(String, String, Vec<usize>)> {
    let gh = gates * hidden;
    let mut v = Vec::with_capacity(4 * layers);
    for k in 0..layers {
        let inp = if k == 0 { input } else { hidden };
        for (p, shape) in [
            ("weight_ih", vec![gh, inp]),
            ("weight_hh", vec![gh, hidden]),
            ("bias_ih", vec![gh]),
            ("bias_hh", vec![gh]),
        ] {
            v.push((format!("{name}.{p}_l{k}"), format!("{name}{k}.{p}"), shape));
        }
    }
    v
}

fn named(name: impl Into<String>, module: TorchModule) -> NamedModule {
    NamedModule {
        name: name.into(),
        module,
    }
}

fn activation(kind: ActivationKind) -> TorchModule {
    match kind {
        ActivationKind::Relu => TorchModule::Relu {},
        ActivationKind::Tanh => TorchModule::Tanh {},
        ActivationKind::Sigmoid => TorchModule::Sigmoid {},
    }
}

/// TF `'same'` padding of one axis, `(before, after)`: the odd pixel goes after (as
/// `compute::conv::Padding::Same`).
fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// The PyTorch modules that compute the same function as memaudit's model `cfg`, in order.
/// Parameterless modules keep memaudit's layer names, so every state-dict key is memaudit's
/// parameter name except the recurrent layers'.
pub fn modules(cfg: &ModelConfig) -> std::result::Result<Vec<NamedModule>, EngineError> {
    // Validates the config with the builder's own messages.
    cfg.build()?;
    let mut m = Vec::new();
    match cfg {
        ModelConfig::Gpt { .. } => {
            return Err(EngineError::Config(
                "a GPT is exported and imported in the GPT-2 (Hugging Face) layout, not as a \
                 module list"
                    .into(),
            ));
        }
        ModelConfig::Mlp {
            input,
            hidden,
            classes,
            activation: act,
            dropout,
            input_dropout,
        } => {
            if *input_dropout > 0.0 {
                m.push(named(
                    "input_dropout",
                    TorchModule::Dropout { p: *input_dropout },
                ));
            }
            let mut prev = *input;
            for (i, &h) in hidden.iter().enumerate() {
                let n = i + 1;
                m.push(named(
                    format!("fc{n}"),
                    TorchModule::Linear {
                        in_features: prev,
                        out_features: h,
                        bias: true,
                    },
                ));
                m.push(named(format!("act{n}"), activation(*act)));
                if *dropout > 0.0 {
                    m.push(named(
                        format!("dropout{n}"),
                        TorchModule::Dropout { p: *dropout },
                    ));
                }
                prev = h;
            }
            m.push(named(
                format!("fc{}", hidden.len() + 1),
                TorchModule::Linear {
                    in_features: prev,
                    out_features: *classes,
                    bias: true,
                },
            ));
        }
        ModelConfig::SparseLogReg { features, classes } => m.push(named(
            "fc",
            TorchModule::Linear {
                in_features: *features,
                out_features: *classes,
                bias: true,
            },
        )),
        ModelConfig::TutorialCnn {
            channels,
            height,
            width,
            classes,
        } => {
            // conv1: 16 @ 8x8, stride 2, TF 'same'.
            let (top, bottom) = same_padding(*height, 8, 2);
            let (left, right) = same_padding(*width, 8, 2);
            let symmetric = top == bottom && left == right && top == left;
            if !symmetric {
                m.push(named(
                    "pad1",
                    TorchModule::ZeroPad2d {
                        padding: [left, right, top, bottom],
                    },
                ));
            }
            m.push(named(
                "conv1",
                TorchModule::Conv2d {
                    in_channels: *channels,
                    out_channels: 16,
                    kernel_size: 8,
                    stride: 2,
                    padding: if symmetric { top } else { 0 },
                    bias: true,
                },
            ));
            let (mut h, mut w) = (height.div_ceil(2), width.div_ceil(2));
            m.push(named("relu1", TorchModule::Relu {}));
            m.push(named(
                "pool1",
                TorchModule::MaxPool2d {
                    kernel_size: 2,
                    stride: 1,
                    padding: 0,
                },
            ));
            (h, w) = (h - 1, w - 1);
            m.push(named(
                "conv2",
                TorchModule::Conv2d {
                    in_channels: 16,
                    out_channels: 32,
                    kernel_size: 4,
                    stride: 2,
                    padding: 0,
                    bias: true,
                },
            ));
            (h, w) = ((h - 4) / 2 + 1, (w - 4) / 2 + 1);
            m.push(named("relu2", TorchModule::Relu {}));
            m.push(named(
                "pool2",
                TorchModule::MaxPool2d {
                    kernel_size: 2,
                    stride: 1,
                    padding: 0,
                },
            ));
            (h, w) = (h - 1, w - 1);
            m.push(named("flatten", TorchModule::Flatten {}));
            m.push(named(
                "fc1",
                TorchModule::Linear {
                    in_features: 32 * h * w,
                    out_features: 32,
                    bias: true,
                },
            ));
            m.push(named("relu3", TorchModule::Relu {}));
            m.push(named(
                "fc2",
                TorchModule::Linear {
                    in_features: 32,
                    out_features: *classes,
                    bias: true,
                },
            ));
        }
        ModelConfig::GroupNormCnn {
            channels,
            height,
            width,
            classes,
        } => {
            let (mut prev, mut h, mut w) = (*channels, *height, *width);
            for (i, &c) in GN_WIDTHS.iter().enumerate() {
                let n = i + 1;
                m.push(named(
                    format!("conv{n}"),
                    TorchModule::Conv2d {
                        in_channels: prev,
                        out_channels: c,
                        kernel_size: 3,
                        stride: 1,
                        padding: 1,
                        bias: false,
                    },
                ));
                m.push(named(
                    format!("gn{n}"),
                    TorchModule::GroupNorm {
                        num_groups: GN_GROUPS,
                        num_channels: c,
                        eps: GroupNorm::new(GN_GROUPS, c)?.eps,
                    },
                ));
                m.push(named(format!("relu{n}"), TorchModule::Relu {}));
                m.push(named(
                    format!("pool{n}"),
                    TorchModule::MaxPool2d {
                        kernel_size: 2,
                        stride: 2,
                        padding: 0,
                    },
                ));
                (prev, h, w) = (c, h / 2, w / 2);
            }
            m.push(named("flatten", TorchModule::Flatten {}));
            m.push(named(
                "fc1",
                TorchModule::Linear {
                    in_features: prev * h * w,
                    out_features: GN_HIDDEN,
                    bias: true,
                },
            ));
            m.push(named("relu_fc", TorchModule::Relu {}));
            m.push(named(
                "fc2",
                TorchModule::Linear {
                    in_features: GN_HIDDEN,
                    out_features: *classes,
                    bias: true,
                },
            ));
        }
        ModelConfig::LstmLm {
            vocab,
            embed,
            hidden,
            layers,
            dropout,
        }
        | ModelConfig::GruLm {
            vocab,
            embed,
            hidden,
            layers,
            dropout,
        } => {
            let lstm = matches!(cfg, ModelConfig::LstmLm { .. });
            m.push(named(
                "embedding",
                TorchModule::Embedding {
                    num_embeddings: *vocab,
                    embedding_dim: *embed,
                },
            ));
            // memaudit drops out after every recurrent layer: nn.LSTM's `dropout` covers the
            // outputs of all but the last layer, a separate nn.Dropout the last.
            let between = if *layers > 1 { *dropout } else { 0.0 };
            let (name, module) = if lstm {
                (
                    "lstm",
                    TorchModule::Lstm {
                        input_size: *embed,
                        hidden_size: *hidden,
                        num_layers: *layers,
                        dropout: between,
                    },
                )
            } else {
                (
                    "gru",
                    TorchModule::Gru {
                        input_size: *embed,
                        hidden_size: *hidden,
                        num_layers: *layers,
                        dropout: between,
                    },
                )
            };
            m.push(named(name, module));
            if *dropout > 0.0 {
                m.push(named("dropout", TorchModule::Dropout { p: *dropout }));
            }
            m.push(named(
                "output",
                TorchModule::Linear {
                    in_features: *hidden,
                    out_features: *vocab,
                    bias: true,
                },
            ));
        }
    }
    Ok(m)
}

/// Every parameter tensor of `cfg` under both names, in memaudit's (= PyTorch's state-dict)
/// order. Checked against the model's own parameter list, so a model change that the PyTorch
/// description misses is an error here, never a silently wrong export.
pub fn tensor_map(cfg: &ModelConfig) -> std::result::Result<Vec<MappedTensor>, EngineError> {
    let model = cfg.build()?;
    let specs = model.param_specs();
    let described: Vec<(String, String, Vec<usize>)> = modules(cfg)?
        .iter()
        .flat_map(|m| m.module.tensors(&m.name))
        .collect();
    let drift = |what: String| {
        EngineError::Config(format!(
            "the PyTorch description of {} is out of date with the model: {what} (engine bug)",
            family(cfg)
        ))
    };
    if described.len() != specs.len() {
        return Err(drift(format!(
            "{} tensors described, the model has {}",
            described.len(),
            specs.len()
        )));
    }
    specs
        .iter()
        .zip(described)
        .map(|(s, (pytorch, memaudit, shape))| {
            if s.name != memaudit || s.shape != shape {
                return Err(drift(format!(
                    "{memaudit} {shape:?} described, the model has {} {:?}",
                    s.name, s.shape
                )));
            }
            Ok(MappedTensor {
                pytorch,
                memaudit,
                shape,
                offset: s.offset,
            })
        })
        .collect()
}

/// The model family's name in `config.json` (memaudit's config tag, e.g. `lstm_lm`).
pub fn family(cfg: &ModelConfig) -> String {
    serde_json::to_value(cfg)
        .ok()
        .and_then(|v| v.get("type").and_then(Json::as_str).map(String::from))
        .unwrap_or_default()
}

/// Gate order of a recurrent family, top block first.
pub fn gate_order(cfg: &ModelConfig) -> Option<Vec<String>> {
    let order: &[&str] = match cfg {
        ModelConfig::LstmLm { .. } => &LSTM_GATE_ORDER,
        ModelConfig::GruLm { .. } => &GRU_GATE_ORDER,
        _ => return None,
    };
    Some(order.iter().map(|s| s.to_string()).collect())
}

// ---------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------

/// The layout of the model's input or output, for a reader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoSpec {
    /// `tokens`, `dense` or `sparse` (input); `logits` (output).
    pub kind: String,
    /// Axis names or sizes, e.g. `["T", "B"]`, `["B", 1, 28, 28]`.
    pub shape: Vec<Json>,
    pub dtype: String,
    pub note: String,
}

/// A tensor's PyTorch name and shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
}

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportConfig {
    pub format: String,
    /// memaudit's model family: `mlp`, `sparse_log_reg`, `tutorial_cnn`, `group_norm_cnn`,
    /// `lstm_lm`, `gru_lm`.
    pub family: String,
    /// The family's sizes as memaudit's model config names them (vocab, embed, hidden, layers,
    /// dropout; input, hidden, classes, activation; channels, height, width, classes; ...).
    pub architecture: serde_json::Map<String, Json>,
    /// Recurrent families: the gate blocks of `weight_ih`/`weight_hh`/biases, top to bottom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_order: Option<Vec<String>>,
    /// The PyTorch modules, in order of application (empty: derived from the architecture).
    #[serde(default)]
    pub modules: Vec<NamedModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<IoSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<IoSpec>,
    /// Every tensor of `model.safetensors` in state-dict order (informative; the strict check
    /// derives them from the architecture).
    #[serde(default)]
    pub tensors: Vec<TensorEntry>,
    /// Where the weights came from (memaudit's source run: step, training config, data flags);
    /// free-form, absent for folders written by PyTorch.
    #[serde(default, skip_serializing_if = "Json::is_null")]
    pub memaudit: Json,
}

impl ExportConfig {
    pub fn new(cfg: &ModelConfig, memaudit: Json) -> std::result::Result<Self, EngineError> {
        // Through the text form so that f32 fields read as written (dropout 0.3, not
        // 0.30000001192092896).
        let text = serde_json::to_string(cfg).expect("a model config serialises");
        let mut architecture = match serde_json::from_str(&text) {
            Ok(Json::Object(m)) => m,
            _ => unreachable!("a model config serialises to an object"),
        };
        let family = architecture
            .remove("type")
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let tensors = tensor_map(cfg)?
            .into_iter()
            .map(|t| TensorEntry {
                name: t.pytorch,
                shape: t.shape,
            })
            .collect();
        let (input, output) = io_specs(cfg);
        Ok(Self {
            format: FORMAT.into(),
            family,
            architecture,
            gate_order: gate_order(cfg),
            modules: modules(cfg)?,
            input: Some(input),
            output: Some(output),
            tensors,
            memaudit,
        })
    }

    /// memaudit's model config, checked against the gate order and modules given.
    pub fn model_config(&self, path: &Path) -> Result<ModelConfig> {
        if self.format != FORMAT {
            return Err(format_err(
                path,
                format!("format {:?}, expected {FORMAT:?}", self.format),
            ));
        }
        let mut v = self.architecture.clone();
        v.insert("type".into(), Json::String(self.family.clone()));
        let cfg: ModelConfig = serde_json::from_value(Json::Object(v)).map_err(|e| {
            format_err(
                path,
                format!(
                    "family {:?} with architecture {}: {e} (families: mlp, sparse_log_reg, \
                     tutorial_cnn, group_norm_cnn, lstm_lm, gru_lm)",
                    self.family,
                    Json::Object(self.architecture.clone())
                ),
            )
        })?;
        cfg.build().map_err(|e| format_err(path, e.to_string()))?;
        let want = gate_order(&cfg);
        if self.gate_order.is_some() && self.gate_order != want {
            return Err(format_err(
                path,
                format!(
                    "gate_order {:?}: memaudit's {} weights use PyTorch's order {:?}",
                    self.gate_order.as_deref().unwrap_or_default(),
                    self.family,
                    want.unwrap_or_default()
                ),
            ));
        }
        if !self.modules.is_empty() {
            let ours = modules(&cfg)?;
            if self.modules != ours {
                let at = self
                    .modules
                    .iter()
                    .zip(&ours)
                    .position(|(a, b)| a != b)
                    .unwrap_or(self.modules.len().min(ours.len()));
                let show = |m: Option<&NamedModule>| {
                    m.map_or("nothing".to_string(), |m| {
                        serde_json::to_string(m).unwrap_or_default()
                    })
                };
                return Err(format_err(
                    path,
                    format!(
                        "module {at} is {}, memaudit's {} has {}",
                        show(self.modules.get(at)),
                        self.family,
                        show(ours.get(at))
                    ),
                ));
            }
        }
        Ok(cfg)
    }
}

fn io_specs(cfg: &ModelConfig) -> (IoSpec, IoSpec) {
    let s = |x: &str| Json::String(x.into());
    let n = |x: usize| Json::from(x);
    match cfg {
        ModelConfig::LstmLm { vocab, .. }
        | ModelConfig::GruLm { vocab, .. }
        | ModelConfig::Gpt { vocab, .. } => (
            IoSpec {
                kind: "tokens".into(),
                shape: vec![s("T"), s("B")],
                dtype: "int64".into(),
                note: "time-major token ids (nn.LSTM/nn.GRU with batch_first=False); the \
                       recurrent state starts at zero"
                    .into(),
            },
            IoSpec {
                kind: "logits".into(),
                shape: vec![s("T"), s("B"), n(*vocab)],
                dtype: "float32".into(),
                note: "log_softmax over the last axis gives the next token's natural-log \
                       probabilities"
                    .into(),
            },
        ),
        ModelConfig::Mlp { input, classes, .. } => (
            IoSpec {
                kind: "dense".into(),
                shape: vec![s("B"), n(*input)],
                dtype: "float32".into(),
                note: "flat features (images flattened channels-first, scaled as the run's data \
                       flags say)"
                    .into(),
            },
            logits_spec(*classes),
        ),
        ModelConfig::SparseLogReg { features, classes } => (
            IoSpec {
                kind: "sparse".into(),
                shape: vec![s("B"), n(*features)],
                dtype: "float32".into(),
                note: "feature vectors (TF-IDF or bag of words); dense or torch.sparse".into(),
            },
            logits_spec(*classes),
        ),
        ModelConfig::TutorialCnn {
            channels,
            height,
            width,
            classes,
        }
        | ModelConfig::GroupNormCnn {
            channels,
            height,
            width,
            classes,
        } => (
            IoSpec {
                kind: "dense".into(),
                shape: vec![s("B"), n(*channels), n(*height), n(*width)],
                dtype: "float32".into(),
                note: "images NCHW, scaled as the run's data flags say".into(),
            },
            logits_spec(*classes),
        ),
    }
}

fn logits_spec(classes: usize) -> IoSpec {
    IoSpec {
        kind: "logits".into(),
        shape: vec![Json::String("B".into()), Json::from(classes)],
        dtype: "float32".into(),
        note: "class logits; softmax gives probabilities".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// vocab.json
// ---------------------------------------------------------------------------------------------

/// `vocab.json` of a language model: the tokens (id = index) and how a canary is scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportVocab {
    pub format: String,
    /// `char` (one token per Unicode scalar) or `word` (whitespace-separated, newline = eos).
    pub kind: String,
    pub tokens: Vec<String>,
    #[serde(default)]
    pub unk: Option<String>,
    #[serde(default)]
    pub eos: Option<String>,
    pub canary_scoring: CanaryScoring,
}

/// The Secret Sharer's log-perplexity (Carlini et al. 2019, Def. 1) as memaudit computes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryScoring {
    /// The rule in words.
    pub rule: String,
    /// `zeros`: every layer's h (and the LSTM's c) starts at zero.
    pub initial_state: String,
    /// Fed first and not scored: what precedes an inserted canary in the stream (the line
    /// separator).
    pub context_token_ids: Vec<u32>,
    /// Base of the logarithm (2: bits).
    pub log_base: u32,
    /// Cost of one scored token from its probability p.
    pub token_cost: String,
    /// How token costs combine (`sum`, not mean).
    pub aggregate: String,
    /// The run's canary template in tokens, when the run has one.
    #[serde(default)]
    pub template: Option<ScoredTemplate>,
}

/// A canary template in token ids: `prefix ++ scored ++ suffix`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredTemplate {
    pub text: String,
    /// Fed after the context, not scored.
    pub prefix_token_ids: Vec<u32>,
    /// Scored, in order: the ids each position may take (one for literal text between slots).
    pub scored: Vec<ScoredPosition>,
    /// After the last slot: not scored.
    pub suffix_token_ids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPosition {
    pub candidates: Vec<u32>,
    /// Which slot symbol this position draws (`None`: literal text).
    pub slot_position: Option<usize>,
}

impl CanaryScoring {
    /// memaudit's rule with `context` as the context tokens.
    pub fn memaudit(context: Vec<u32>, template: Option<ScoredTemplate>) -> Self {
        Self {
            rule: "Start every layer's state at zero; feed context_token_ids, then the \
                   template's prefix_token_ids, without scoring; then add max(0, -log2 p) for \
                   each scored token, p = softmax(logits) of the step before it. The suffix after \
                   the last slot is not scored. Exposure ranks candidates by this sum."
                .into(),
            initial_state: "zeros".into(),
            context_token_ids: context,
            log_base: 2,
            token_cost: "max(0, -log2 p)".into(),
            aggregate: "sum".into(),
            template,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// optimizer.json
// ---------------------------------------------------------------------------------------------

/// `optimizer.json`: the optimizer beside its buffers in `optimizer.safetensors`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerFile {
    pub format: String,
    pub optimizer: OptimizerConfig,
    /// Optimizer steps taken (bias correction of Adam uses it).
    pub step: u64,
    /// Buffer names; tensor `{buffer}.{pytorch name}` of `optimizer.safetensors` holds one.
    pub buffers: Vec<String>,
    /// The key PyTorch's `torch.optim` state uses for each buffer (same update rule).
    pub pytorch_state_keys: BTreeMap<String, String>,
}

fn pytorch_state_key(buffer: &str) -> String {
    match buffer {
        "momentum" => "momentum_buffer".into(),
        other => other.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Probe
// ---------------------------------------------------------------------------------------------

/// A fixed model input: token ids `[T, B]` or a dense tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeInput {
    Tokens {
        seq_len: usize,
        batch: usize,
        ids: Vec<i64>,
    },
    Dense(Tensor),
}

/// The probe input for `cfg`: seeded, so every export of a model has the same one.
pub fn probe_input(cfg: &ModelConfig) -> ProbeInput {
    let mut rng = ChaCha8Rng::seed_from_u64(PROBE_SEED);
    match cfg {
        ModelConfig::LstmLm { vocab, .. }
        | ModelConfig::GruLm { vocab, .. }
        | ModelConfig::Gpt { vocab, .. } => {
            let (t, b) = PROBE_TOKENS;
            ProbeInput::Tokens {
                seq_len: t,
                batch: b,
                ids: (0..t * b)
                    .map(|_| rng.random_range(0..*vocab) as i64)
                    .collect(),
            }
        }
        ModelConfig::SparseLogReg { features, .. } => {
            let mut data = vec![0.0f32; PROBE_ROWS * features];
            for row in data.chunks_exact_mut(*features) {
                for _ in 0..PROBE_SPARSE_NNZ.min(*features) {
                    row[rng.random_range(0..*features)] = rng.random::<f32>();
                }
            }
            ProbeInput::Dense(Tensor {
                data,
                shape: vec![PROBE_ROWS, *features],
            })
        }
        ModelConfig::Mlp { input, .. } => ProbeInput::Dense(Tensor {
            data: (0..PROBE_ROWS * input).map(|_| rng.random()).collect(),
            shape: vec![PROBE_ROWS, *input],
        }),
        ModelConfig::TutorialCnn {
            channels,
            height,
            width,
            ..
        }
        | ModelConfig::GroupNormCnn {
            channels,
            height,
            width,
            ..
        } => {
            let n = PROBE_ROWS * channels * height * width;
            ProbeInput::Dense(Tensor {
                data: (0..n).map(|_| rng.random()).collect(),
                shape: vec![PROBE_ROWS, *channels, *height, *width],
            })
        }
    }
}

/// memaudit's logits for `input` (evaluation mode: no dropout).
pub fn logits(
    cfg: &ModelConfig,
    params: &[f32],
    input: &ProbeInput,
) -> std::result::Result<Tensor, EngineError> {
    let model = cfg.build()?;
    let value = match (input, cfg) {
        (
            ProbeInput::Tokens {
                seq_len,
                batch,
                ids,
            },
            ModelConfig::LstmLm { vocab, .. }
            | ModelConfig::GruLm { vocab, .. }
            | ModelConfig::Gpt { vocab, .. },
        ) => {
            if let Some(t) = ids.iter().find(|&&t| t < 0 || t as usize >= *vocab) {
                return Err(EngineError::Shape(format!(
                    "token {t} is outside the vocabulary of {vocab}"
                )));
            }
            Value::Tokens(TokenInput {
                seq_len: *seq_len,
                batch: *batch,
                ids: ids.iter().map(|&t| t as u32).collect(),
            })
        }
        (ProbeInput::Dense(t), ModelConfig::SparseLogReg { features, .. }) => {
            if t.shape.len() != 2 || t.shape[1] != *features {
                return Err(EngineError::Shape(format!(
                    "expected [B, {features}] features, got {:?}",
                    t.shape
                )));
            }
            let mut row_ptr = vec![0];
            let (mut indices, mut values) = (Vec::new(), Vec::new());
            for row in t.data.chunks_exact(*features) {
                for (j, &x) in row.iter().enumerate() {
                    if x != 0.0 {
                        indices.push(j as u32);
                        values.push(x);
                    }
                }
                row_ptr.push(indices.len());
            }
            Value::Sparse(SparseInput {
                dim: *features,
                row_ptr,
                indices,
                values,
            })
        }
        (
            ProbeInput::Dense(t),
            ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } | ModelConfig::Gpt { .. },
        ) => {
            return Err(EngineError::Shape(format!(
                "a language model takes token ids, got a float tensor {:?}",
                t.shape
            )));
        }
        (ProbeInput::Dense(t), _) => Value::Dense(t.clone()),
        (ProbeInput::Tokens { .. }, _) => {
            return Err(EngineError::Shape(
                "token ids given to a model that takes dense input".into(),
            ));
        }
    };
    model.forward(
        params,
        &value,
        false,
        &mut ChaCha8Rng::seed_from_u64(PROBE_SEED),
    )
}

/// How far logits `a` are from `b`: `max |a - b| / max |b|` (0 when both are all zero).
pub fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    if diff == 0.0 {
        0.0
    } else if a.len() != b.len() || scale == 0.0 {
        f64::INFINITY
    } else {
        diff / scale
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors helpers
// ---------------------------------------------------------------------------------------------

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_safetensors(
    path: &Path,
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|source| PytorchError::Safetensors {
                    path: path.display().to_string(),
                    source,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes =
        safetensors::serialize(views, None).map_err(|source| PytorchError::Safetensors {
            path: path.display().to_string(),
            source,
        })?;
    fs::write(path, bytes).map_err(|e| io_err(path, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| PytorchError::Json {
        path: path.display().to_string(),
        source,
    })?;
    fs::write(path, text + "\n").map_err(|e| io_err(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| PytorchError::Json {
        path: path.display().to_string(),
        source,
    })
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Read exactly the tensors `expected` (name, shape) from a safetensors file into slices of
/// `out` (name -> range), refusing missing, unexpected, mis-shaped and non-F32 tensors.
fn read_exact(
    path: &Path,
    expected: &[(String, Vec<usize>, std::ops::Range<usize>)],
    out: &mut [f32],
) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| PytorchError::Safetensors {
        path: path.display().to_string(),
        source,
    })?;
    let tensors: HashMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    let want: HashMap<&str, ()> = expected.iter().map(|(n, _, _)| (n.as_str(), ())).collect();
    let mut missing: Vec<(String, Vec<usize>)> = expected
        .iter()
        .filter(|(n, _, _)| !tensors.contains_key(n))
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    let mut unexpected: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .filter(|(n, _)| !want.contains_key(n.as_str()))
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    unexpected.sort();
    // A tensor under another name but the expected shape is the common mistake: name both.
    if !missing.is_empty() || !unexpected.is_empty() {
        missing.sort_by_key(|(n, _)| expected.iter().position(|(e, _, _)| e == n));
        return Err(PytorchError::Names {
            path: path.display().to_string(),
            missing,
            unexpected,
        });
    }
    for (name, shape, range) in expected {
        let t = &tensors[name];
        if t.dtype() != Dtype::F32 {
            return Err(PytorchError::Dtype {
                path: path.display().to_string(),
                tensor: name.clone(),
                found: dtype_name(t.dtype()),
            });
        }
        if t.shape() != shape.as_slice() {
            return Err(PytorchError::Shape {
                path: path.display().to_string(),
                tensor: name.clone(),
                found: t.shape().to_vec(),
                expected: shape.clone(),
            });
        }
        for (o, c) in out[range.clone()].iter_mut().zip(t.data().chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Export and import
// ---------------------------------------------------------------------------------------------

/// What to export.
pub struct ExportRequest<'a> {
    pub config: &'a ModelConfig,
    pub params: &'a [f32],
    /// The optimizer and its state (`optimizer.json` + `optimizer.safetensors`), if any.
    pub optimizer: Option<(&'a OptimizerConfig, &'a OptimizerState)>,
    /// Language models: `vocab.json`.
    pub vocab: Option<&'a ExportVocab>,
    /// The `memaudit` section of `config.json` (source run, step, training config).
    pub memaudit: Json,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExportSummary {
    pub family: String,
    pub tensors: usize,
    pub parameters: usize,
    pub files: Vec<String>,
    /// Largest |logit| of the probe (a reader's tolerance scales with it).
    pub probe_max_abs_logit: f64,
}

/// Write an export into the existing folder `dir` (the caller checks it may be written).
pub fn export(dir: &Path, req: &ExportRequest<'_>) -> Result<ExportSummary> {
    let cfg = req.config;
    let map = tensor_map(cfg)?;
    let n: usize = map.iter().map(MappedTensor::len).sum();
    if req.params.len() != n {
        return Err(EngineError::Shape(format!(
            "{} has {n} parameters, got a vector of {}",
            family(cfg),
            req.params.len()
        ))
        .into());
    }
    let mut files = Vec::new();
    let weights = map
        .iter()
        .map(|t| {
            (
                t.pytorch.clone(),
                Dtype::F32,
                t.shape.clone(),
                f32_bytes(&req.params[t.range()]),
            )
        })
        .collect();
    write_safetensors(&dir.join(WEIGHTS_FILE), weights)?;
    files.push(WEIGHTS_FILE.to_string());

    let config = ExportConfig::new(cfg, req.memaudit.clone())?;
    write_json(&dir.join(CONFIG_FILE), &config)?;
    files.push(CONFIG_FILE.to_string());

    if let Some((ocfg, state)) = req.optimizer {
        let mut blobs = Vec::new();
        for (b, buf) in &state.buffers {
            if buf.len() != n {
                return Err(EngineError::Shape(format!(
                    "optimizer buffer {b} has {} values for {n} parameters",
                    buf.len()
                ))
                .into());
            }
            for t in &map {
                blobs.push((
                    format!("{b}.{}", t.pytorch),
                    Dtype::F32,
                    t.shape.clone(),
                    f32_bytes(&buf[t.range()]),
                ));
            }
        }
        write_safetensors(&dir.join(OPTIMIZER_FILE), blobs)?;
        let file = OptimizerFile {
            format: FORMAT.into(),
            optimizer: ocfg.clone(),
            step: state.step,
            buffers: state.buffers.iter().map(|(b, _)| b.clone()).collect(),
            pytorch_state_keys: state
                .buffers
                .iter()
                .map(|(b, _)| (b.clone(), pytorch_state_key(b)))
                .collect(),
        };
        write_json(&dir.join(OPTIMIZER_STATE_FILE), &file)?;
        files.push(OPTIMIZER_FILE.to_string());
        files.push(OPTIMIZER_STATE_FILE.to_string());
    }

    if let Some(v) = req.vocab {
        check_vocab(&dir.join(VOCAB_FILE), v, cfg)?;
        write_json(&dir.join(VOCAB_FILE), v)?;
        files.push(VOCAB_FILE.to_string());
    }

    let input = probe_input(cfg);
    let out = logits(cfg, req.params, &input)?;
    let input_blob = match &input {
        ProbeInput::Tokens {
            seq_len,
            batch,
            ids,
        } => (
            "input".to_string(),
            Dtype::I64,
            vec![*seq_len, *batch],
            ids.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        ProbeInput::Dense(t) => (
            "input".to_string(),
            Dtype::F32,
            t.shape.clone(),
            f32_bytes(&t.data),
        ),
    };
    write_safetensors(
        &dir.join(PROBE_FILE),
        vec![
            input_blob,
            (
                "logits".into(),
                Dtype::F32,
                out.shape.clone(),
                f32_bytes(&out.data),
            ),
        ],
    )?;
    files.push(PROBE_FILE.to_string());
    Ok(ExportSummary {
        family: config.family,
        tensors: map.len(),
        parameters: n,
        files,
        probe_max_abs_logit: out
            .data
            .iter()
            .map(|x| (*x as f64).abs())
            .fold(0.0, f64::max),
    })
}

fn check_vocab(path: &Path, v: &ExportVocab, cfg: &ModelConfig) -> Result<()> {
    if v.format != VOCAB_FORMAT {
        return Err(format_err(
            path,
            format!("format {:?}, expected {VOCAB_FORMAT:?}", v.format),
        ));
    }
    if !matches!(cfg, ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. }) {
        return Err(format_err(
            path,
            format!("a vocabulary given for a {} model", family(cfg)),
        ));
    }
    if v.tokens.len() != cfg.classes() {
        return Err(format_err(
            path,
            format!(
                "{} tokens, the model's vocabulary has {}",
                v.tokens.len(),
                cfg.classes()
            ),
        ));
    }
    let bad = v
        .canary_scoring
        .context_token_ids
        .iter()
        .chain(v.canary_scoring.template.iter().flat_map(|t| {
            t.prefix_token_ids
                .iter()
                .chain(t.suffix_token_ids.iter())
                .chain(t.scored.iter().flat_map(|s| s.candidates.iter()))
        }))
        .find(|&&t| t as usize >= v.tokens.len());
    if let Some(t) = bad {
        return Err(format_err(
            path,
            format!(
                "canary_scoring names token {t}, outside the {} tokens",
                v.tokens.len()
            ),
        ));
    }
    Ok(())
}

/// The probe check of an import.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeCheck {
    /// `max |memaudit - probe| / max |probe|`.
    pub relative_difference: f64,
    /// Logits compared.
    pub values: usize,
}

/// An imported folder.
#[derive(Clone, Debug)]
pub struct Imported {
    pub config: ModelConfig,
    pub export: ExportConfig,
    /// memaudit's flat parameter vector.
    pub params: Vec<f32>,
    pub optimizer: Option<(OptimizerConfig, OptimizerState)>,
    pub vocab: Option<ExportVocab>,
    /// `None` when the folder has no `probe.safetensors`.
    pub probe: Option<ProbeCheck>,
}

/// Read an exported folder (memaudit's or one written by PyTorch with the same names): the
/// config, every weight (strictly), the optimizer state and vocabulary when present, and check
/// the probe's logits when it has one.
pub fn import(dir: &Path) -> Result<Imported> {
    let cp = dir.join(CONFIG_FILE);
    if !cp.is_file() {
        return Err(format_err(
            &cp,
            "not found (an exported folder has config.json, model.safetensors and, for \
             language models, vocab.json)",
        ));
    }
    let export: ExportConfig = read_json(&cp)?;
    let config = export.model_config(&cp)?;
    let map = tensor_map(&config)?;
    let n: usize = map.iter().map(MappedTensor::len).sum();
    let mut params = vec![0.0f32; n];
    let expected: Vec<(String, Vec<usize>, std::ops::Range<usize>)> = map
        .iter()
        .map(|t| (t.pytorch.clone(), t.shape.clone(), t.range()))
        .collect();
    read_exact(&dir.join(WEIGHTS_FILE), &expected, &mut params)?;

    let (op, os) = (dir.join(OPTIMIZER_STATE_FILE), dir.join(OPTIMIZER_FILE));
    let optimizer = match (op.is_file(), os.is_file()) {
        (false, false) => None,
        (true, true) => {
            let file: OptimizerFile = read_json(&op)?;
            if file.format != FORMAT {
                return Err(format_err(
                    &op,
                    format!("format {:?}, expected {FORMAT:?}", file.format),
                ));
            }
            let mut expected = Vec::new();
            for (i, b) in file.buffers.iter().enumerate() {
                for t in &map {
                    let r = t.range();
                    expected.push((
                        format!("{b}.{}", t.pytorch),
                        t.shape.clone(),
                        i * n + r.start..i * n + r.end,
                    ));
                }
            }
            let mut flat = vec![0.0f32; n * file.buffers.len()];
            read_exact(&os, &expected, &mut flat)?;
            let state = OptimizerState {
                step: file.step,
                buffers: file
                    .buffers
                    .iter()
                    .cloned()
                    .zip(flat.chunks_exact(n.max(1)).map(<[f32]>::to_vec))
                    .collect(),
            };
            // The buffers must be the ones this optimizer keeps (e.g. Adam: exp_avg, exp_avg_sq).
            Optimizer::new(file.optimizer.clone(), Schedule::Constant, n)
                .and_then(|mut o| o.load_state(state.clone()))
                .map_err(|e| format_err(&op, e.to_string()))?;
            Some((file.optimizer, state))
        }
        (true, false) => {
            return Err(format_err(
                &os,
                format!("not found, but {OPTIMIZER_STATE_FILE} is (both or neither)"),
            ));
        }
        (false, true) => {
            return Err(format_err(
                &op,
                format!("not found, but {OPTIMIZER_FILE} is (both or neither)"),
            ));
        }
    };

    let vp = dir.join(VOCAB_FILE);
    let vocab = if vp.is_file() {
        let v: ExportVocab = read_json(&vp)?;
        check_vocab(&vp, &v, &config)?;
        Some(v)
    } else {
        None
    };

    let pp = dir.join(PROBE_FILE);
    let probe = if pp.is_file() {
        Some(check_probe(&pp, &config, &params)?)
    } else {
        None
    };
    Ok(Imported {
        config,
        export,
        params,
        optimizer,
        vocab,
        probe,
    })
}

/// Read `probe.safetensors` (`input`, `logits`) and compare its logits with memaudit's.
fn check_probe(path: &Path, cfg: &ModelConfig, params: &[f32]) -> Result<ProbeCheck> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| PytorchError::Safetensors {
        path: path.display().to_string(),
        source,
    })?;
    let get = |name: &str| {
        st.tensor(name).map_err(|_| {
            format_err(
                path,
                format!("no tensor {name:?} (a probe holds input and logits)"),
            )
        })
    };
    let (inp, out) = (get("input")?, get("logits")?);
    let input = match inp.dtype() {
        Dtype::I64 if inp.shape().len() == 2 => ProbeInput::Tokens {
            seq_len: inp.shape()[0],
            batch: inp.shape()[1],
            ids: inp
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        },
        Dtype::F32 => ProbeInput::Dense(Tensor {
            data: inp
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            shape: inp.shape().to_vec(),
        }),
        d => {
            return Err(format_err(
                path,
                format!(
                    "input is {} {:?}: expected int64 token ids [T, B] or float32 features",
                    dtype_name(d),
                    inp.shape()
                ),
            ));
        }
    };
    if out.dtype() != Dtype::F32 {
        return Err(PytorchError::Dtype {
            path: path.display().to_string(),
            tensor: "logits".into(),
            found: dtype_name(out.dtype()),
        });
    }
    let ours = logits(cfg, params, &input).map_err(|e| format_err(path, e.to_string()))?;
    if ours.shape != out.shape() {
        return Err(PytorchError::Shape {
            path: path.display().to_string(),
            tensor: "logits".into(),
            found: out.shape().to_vec(),
            expected: ours.shape,
        });
    }
    let theirs: Vec<f32> = out
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let relative = relative_difference(&ours.data, &theirs);
    if relative.is_nan() || relative > PROBE_TOLERANCE {
        return Err(PytorchError::Probe {
            path: path.display().to_string(),
            relative,
            tolerance: PROBE_TOLERANCE,
        });
    }
    Ok(ProbeCheck {
        relative_difference: relative,
        values: theirs.len(),
    })
}
