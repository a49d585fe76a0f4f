//! GPT-2 checkpoints in Hugging Face's `GPT2LMHeadModel` layout, both ways: a folder with
//! `config.json` (a `GPT2Config`) and `model.safetensors`.
//!
//! What real checkpoints look like, and what this module does about each:
//! - projections are `Conv1D` modules whose weights are `[in, out]`, the transpose of
//!   `nn.Linear` (and of memaudit's `[out, in]`): `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`,
//!   `mlp.c_proj` are transposed on import and export. A square `c_proj` would load untransposed
//!   without any shape error, so the tests compare logits, never shapes alone;
//! - names carry a `transformer.` prefix (`GPT2LMHeadModel`) or not (`GPT2Model`, the hub's
//!   original `gpt2` files); both are read, the prefix is written;
//! - older checkpoints carry the buffers `h.{k}.attn.bias` (the causal mask, `[1, 1, n_pos,
//!   n_pos]`, bool, uint8 or float) and `h.{k}.attn.masked_bias` (the fill value): the mask is
//!   checked to be causal, the fill value is ignored (masked probabilities are exactly 0 here;
//!   GPT-2's -1e4 fill gives exp(-1e4) = 0 in f32 as well);
//! - a tied head (`tie_word_embeddings`, the default) may store `lm_head.weight` or not; if it
//!   does it must equal `wte.weight`. An untied head must be present;
//! - config.json's attention-scaling flags `scale_attn_weights` and
//!   `scale_attn_by_inverse_layer_idx` are honoured; `reorder_and_upcast_attn` only changes
//!   float rounding (memaudit computes the product in f32 either way) and is accepted.
//!
//! Anything else is refused, naming the tensor (and both shapes for a shape mismatch) or the
//! config key. Export writes the same layout (prefixed names, Conv1D weights, no buffers, no
//! `lm_head.weight` when tied, safetensors metadata `format: pt`) and a config.json, so
//! `GPT2LMHeadModel.from_pretrained(folder)` loads it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{Value as Json, json};
use thiserror::Error;

use crate::layers::GeluKind;
use crate::models::ModelConfig;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Hugging Face's prefix of the decoder's tensors in `GPT2LMHeadModel`.
pub const PREFIX: &str = "transformer.";

#[derive(Debug, Error)]
pub enum Gpt2Error {
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
    #[error("{path}: {source}")]
    Safetensors {
        path: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("config.json: {key}: {msg}")]
    Config { key: String, msg: String },
    #[error("{path}: tensor {tensor} has shape {found:?}, the config needs {expected:?}")]
    Shape {
        path: String,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {tensor} ({expected:?}) is missing")]
    Missing {
        path: String,
        tensor: String,
        expected: Vec<usize>,
    },
    #[error(
        "{path}: unexpected tensor {tensor} {shape:?} (not part of a GPT2LMHeadModel with this config)"
    )]
    Unexpected {
        path: String,
        tensor: String,
        shape: Vec<usize>,
    },
    #[error("{path}: tensor {tensor} is {found}, only float32 is read")]
    Dtype {
        path: String,
        tensor: String,
        found: String,
    },
    #[error("{path}: {tensor}: {msg}")]
    Content {
        path: String,
        tensor: String,
        msg: String,
    },
    #[error("{0}")]
    Engine(#[from] crate::error::EngineError),
}

pub type Result<T> = std::result::Result<T, Gpt2Error>;

/// A checkpoint read from a GPT-2 folder.
#[derive(Clone, Debug)]
pub struct Gpt2Import {
    pub config: ModelConfig,
    /// memaudit's flat parameter vector for `config`.
    pub params: Vec<f32>,
    /// Whether the names carried the `transformer.` prefix.
    pub prefixed: bool,
    /// How many `attn.bias` / `attn.masked_bias` buffers were found (and checked).
    pub buffers: usize,
    /// Whether a tied checkpoint stored `lm_head.weight` (equal to `wte.weight`).
    pub stored_tied_head: bool,
}

fn cfg_err(key: &str, msg: impl Into<String>) -> Gpt2Error {
    Gpt2Error::Config {
        key: key.into(),
        msg: msg.into(),
    }
}

/// memaudit's GPT config from a Hugging Face `GPT2Config` (config.json as JSON).
pub fn config_from_hf(j: &Json) -> Result<ModelConfig> {
    if let Some(t) = j.get("model_type")
        && t.as_str() != Some("gpt2")
    {
        return Err(cfg_err("model_type", format!("{t} is not gpt2")));
    }
    if j.get("add_cross_attention").and_then(Json::as_bool) == Some(true) {
        return Err(cfg_err(
            "add_cross_attention",
            "cross-attention (an encoder-decoder GPT-2) is not supported",
        ));
    }
    let uint = |key: &str| -> Result<usize> {
        match j.get(key) {
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| cfg_err(key, format!("{v} is not a non-negative integer"))),
            None => Err(cfg_err(key, "missing")),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool> {
        match j.get(key) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| cfg_err(key, format!("{v} is not true or false"))),
        }
    };
    let vocab = uint("vocab_size")?;
    let n_ctx = uint("n_positions")?;
    let embed = uint("n_embd")?;
    let layers = uint("n_layer")?;
    let heads = uint("n_head")?;
    let inner = match j.get("n_inner") {
        None | Some(Json::Null) => 4 * embed,
        Some(_) => uint("n_inner")?,
    };
    let gelu = match j.get("activation_function") {
        None => GeluKind::Tanh,
        Some(v) => v.as_str().and_then(GeluKind::from_hf_name).ok_or_else(|| {
            cfg_err(
                "activation_function",
                format!("{v}: use gelu_new (tanh GELU) or gelu"),
            )
        })?,
    };
    let ln_eps = match j.get("layer_norm_epsilon") {
        None => crate::layers::LAYER_NORM_EPS,
        Some(v) => v
            .as_f64()
            .filter(|e| *e > 0.0 && e.is_finite())
            .ok_or_else(|| {
                cfg_err(
                    "layer_norm_epsilon",
                    format!("{v} is not a positive number"),
                )
            })? as f32,
    };
    // Numerics only (upcasts the product to f32 under half precision): accepted either way.
    flag("reorder_and_upcast_attn", false)?;
    let cfg = ModelConfig::Gpt {
        vocab,
        n_ctx,
        embed,
        layers,
        heads,
        inner,
        tie: flag("tie_word_embeddings", true)?,
        gelu,
        ln_eps,
        scale_attn_weights: flag("scale_attn_weights", true)?,
        scale_attn_by_inverse_layer_idx: flag("scale_attn_by_inverse_layer_idx", false)?,
    };
    cfg.gpt_shape().expect("a GPT").validate().map_err(|e| {
        cfg_err(
            "n_embd/n_head/n_layer/n_positions/vocab_size",
            e.to_string(),
        )
    })?;
    Ok(cfg)
}

/// config.json for a memaudit GPT config, as `GPT2Config.to_dict()` would write it.
pub fn config_to_hf(cfg: &ModelConfig) -> Result<Json> {
    let s = cfg
        .gpt_shape()
        .ok_or_else(|| cfg_err("model_type", "not a GPT model"))?;
    Ok(json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": s.vocab,
        "n_positions": s.n_ctx,
        "n_ctx": s.n_ctx,
        "n_embd": s.embed,
        "n_layer": s.layers,
        "n_head": s.heads,
        "n_inner": s.inner,
        "activation_function": s.gelu.hf_name(),
        "layer_norm_epsilon": s.ln_eps,
        "scale_attn_weights": s.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": s.scale_attn_by_inverse_layer_idx,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": s.tie,
        // memaudit's GPT has no dropout; these make PyTorch's training mode match too.
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
    }))
}

/// Whether a memaudit parameter name (without the `gpt.` layer prefix) is a `Conv1D` weight in
/// Hugging Face's layout.
fn is_conv1d(name: &str) -> bool {
    name.starts_with("h.")
        && (name.ends_with("attn.c_attn.weight")
            || name.ends_with("attn.c_proj.weight")
            || name.ends_with("mlp.c_fc.weight")
            || name.ends_with("mlp.c_proj.weight"))
}

/// One parameter tensor: Hugging Face name without prefix, HF shape, memaudit shape, range.
type TensorLayout = (String, Vec<usize>, Vec<usize>, std::ops::Range<usize>);

/// Each parameter tensor of `cfg`, in memaudit's order.
fn layout(cfg: &ModelConfig) -> Result<Vec<TensorLayout>> {
    let model = cfg.build()?;
    Ok(model
        .param_specs()
        .iter()
        .map(|s| {
            let name = s.name.strip_prefix("gpt.").expect("gpt layer").to_string();
            let hf_shape = if is_conv1d(&name) {
                vec![s.shape[1], s.shape[0]]
            } else {
                s.shape.clone()
            };
            (name, hf_shape, s.shape.clone(), s.range())
        })
        .collect())
}

fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = src[r * cols + c];
        }
    }
    out
}

fn f32s(t: &TensorView<'_>) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}").to_lowercase()
}

/// Read a GPT-2 folder (config.json + model.safetensors).
pub fn import(dir: &Path) -> Result<Gpt2Import> {
    let cpath = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&cpath).map_err(|source| Gpt2Error::Io {
        path: cpath.display().to_string(),
        source,
    })?;
    let j: Json = serde_json::from_str(&text).map_err(|source| Gpt2Error::Json {
        path: cpath.display().to_string(),
        source,
    })?;
    let config = config_from_hf(&j)?;
    let wpath = dir.join(WEIGHTS_FILE);
    let bytes = fs::read(&wpath).map_err(|source| Gpt2Error::Io {
        path: wpath.display().to_string(),
        source,
    })?;
    import_tensors(config, &bytes, &wpath.display().to_string())
}

/// The parameters of `config` from the bytes of a safetensors file in GPT-2 layout.
pub fn import_tensors(config: ModelConfig, bytes: &[u8], path: &str) -> Result<Gpt2Import> {
    let shape = config.gpt_shape().expect("a GPT config");
    let st = SafeTensors::deserialize(bytes).map_err(|source| Gpt2Error::Safetensors {
        path: path.into(),
        source,
    })?;
    let tensors: BTreeMap<String, TensorView<'_>> = st.tensors().into_iter().collect();
    let prefixed = tensors.keys().any(|n| n.starts_with(PREFIX));
    let lay = layout(&config)?;
    let expected: BTreeMap<&str, usize> = lay
        .iter()
        .enumerate()
        .map(|(k, (n, ..))| (n.as_str(), k))
        .collect();
    let mut params = vec![0.0f32; lay.iter().map(|l| l.3.len()).sum()];
    let mut seen = vec![false; lay.len()];
    let mut buffers = 0;
    let mut tied_head: Option<Vec<f32>> = None;
    let p = path.to_string();
    for (full, t) in &tensors {
        let name = if full == "lm_head.weight" {
            full.as_str()
        } else if prefixed {
            match full.strip_prefix(PREFIX) {
                Some(n) => n,
                None => {
                    return Err(Gpt2Error::Unexpected {
                        path: p,
                        tensor: full.clone(),
                        shape: t.shape().to_vec(),
                    });
                }
            }
        } else {
            full.as_str()
        };
        // Buffers of GPT2Attention.
        if let Some(rest) = name.strip_prefix("h.") {
            let block: Option<usize> = rest.split('.').next().and_then(|k| k.parse().ok());
            let kind = rest.split_once('.').map(|x| x.1);
            if block.is_some_and(|k| k < shape.layers)
                && matches!(kind, Some("attn.bias") | Some("attn.masked_bias"))
            {
                if kind == Some("attn.bias") {
                    check_causal_mask(full, t, shape.n_ctx, &p)?;
                }
                buffers += 1;
                continue;
            }
        }
        if name == "lm_head.weight" && shape.tie {
            let want = vec![shape.vocab, shape.embed];
            if t.shape() != want.as_slice() {
                return Err(Gpt2Error::Shape {
                    path: p,
                    tensor: full.clone(),
                    expected: want,
                    found: t.shape().to_vec(),
                });
            }
            if t.dtype() != Dtype::F32 {
                return Err(Gpt2Error::Dtype {
                    path: p,
                    tensor: full.clone(),
                    found: dtype_name(t.dtype()),
                });
            }
            tied_head = Some(f32s(t));
            continue;
        }
        let Some(&k) = expected.get(name) else {
            return Err(Gpt2Error::Unexpected {
                path: p,
                tensor: full.clone(),
                shape: t.shape().to_vec(),
            });
        };
        let (_, hf_shape, our_shape, range) = &lay[k];
        if t.shape() != hf_shape.as_slice() {
            return Err(Gpt2Error::Shape {
                path: p,
                tensor: full.clone(),
                expected: hf_shape.clone(),
                found: t.shape().to_vec(),
            });
        }
        if t.dtype() != Dtype::F32 {
            return Err(Gpt2Error::Dtype {
                path: p,
                tensor: full.clone(),
                found: dtype_name(t.dtype()),
            });
        }
        let v = f32s(t);
        let v = if is_conv1d(name) {
            // [in, out] -> [out, in].
            transpose(&v, our_shape[1], our_shape[0])
        } else {
            v
        };
        params[range.clone()].copy_from_slice(&v);
        seen[k] = true;
    }
    if let Some(k) = seen.iter().position(|s| !s) {
        let (n, hf_shape, ..) = &lay[k];
        let tensor = if n == "lm_head.weight" || !prefixed {
            n.clone()
        } else {
            format!("{PREFIX}{n}")
        };
        return Err(Gpt2Error::Missing {
            path: p,
            tensor,
            expected: hf_shape.clone(),
        });
    }
    if let Some(h) = &tied_head {
        let wte = &lay[expected["wte.weight"]].3;
        if h.as_slice() != &params[wte.clone()] {
            return Err(Gpt2Error::Content {
                path: p,
                tensor: "lm_head.weight".into(),
                msg: "differs from wte.weight although config.json ties them \
                      (tie_word_embeddings is true or absent)"
                    .into(),
            });
        }
    }
    Ok(Gpt2Import {
        config,
        params,
        prefixed,
        buffers,
        stored_tied_head: tied_head.is_some(),
    })
}

/// `attn.bias` must be the causal mask: `[1, 1, n, n]` with n >= the positions used, ones on
/// and below the diagonal and zeros above.
fn check_causal_mask(name: &str, t: &TensorView<'_>, n_ctx: usize, path: &str) -> Result<()> {
    let s = t.shape();
    if s.len() != 4 || s[0] != 1 || s[1] != 1 || s[2] != s[3] || s[2] < n_ctx {
        return Err(Gpt2Error::Shape {
            path: path.into(),
            tensor: name.into(),
            expected: vec![1, 1, n_ctx, n_ctx],
            found: s.to_vec(),
        });
    }
    let n = s[2];
    let on: Box<dyn Fn(usize) -> bool> = match t.dtype() {
        Dtype::BOOL | Dtype::U8 => Box::new(|k| t.data()[k] != 0),
        Dtype::F32 => {
            let v = f32s(t);
            Box::new(move |k| v[k] != 0.0)
        }
        d => {
            return Err(Gpt2Error::Dtype {
                path: path.into(),
                tensor: name.into(),
                found: dtype_name(d),
            });
        }
    };
    for r in 0..n {
        for c in 0..n {
            if on(r * n + c) != (c <= r) {
                return Err(Gpt2Error::Content {
                    path: path.into(),
                    tensor: name.into(),
                    msg: format!(
                        "not the causal mask (entry [{r}, {c}]); a model that attends to later tokens is not a GPT-2"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Write `config` and `params` as a GPT-2 folder loadable by
/// `GPT2LMHeadModel.from_pretrained(dir)`.
pub fn export(dir: &Path, config: &ModelConfig, params: &[f32]) -> Result<()> {
    let hf = config_to_hf(config)?;
    let lay = layout(config)?;
    let total: usize = lay.iter().map(|l| l.3.len()).sum();
    if params.len() != total {
        return Err(crate::error::EngineError::Shape(format!(
            "this GPT has {total} parameters, got a vector of {}",
            params.len()
        ))
        .into());
    }
    fs::create_dir_all(dir).map_err(|source| Gpt2Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = lay
        .iter()
        .map(|(n, hf_shape, our, range)| {
            let v = &params[range.clone()];
            let v = if is_conv1d(n) {
                transpose(v, our[0], our[1])
            } else {
                v.to_vec()
            };
            let name = if n == "lm_head.weight" {
                n.clone()
            } else {
                format!("{PREFIX}{n}")
            };
            (
                name,
                hf_shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let wpath = dir.join(WEIGHTS_FILE);
    let views = data
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|source| Gpt2Error::Safetensors {
                    path: wpath.display().to_string(),
                    source,
                })
        })
        .collect::<Result<Vec<_>>>()?;
    // transformers refuses safetensors files without `format` metadata.
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|source| Gpt2Error::Safetensors {
            path: wpath.display().to_string(),
            source,
        })?;
    fs::write(&wpath, bytes).map_err(|source| Gpt2Error::Io {
        path: wpath.display().to_string(),
        source,
    })?;
    let cpath = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&hf).map_err(|source| Gpt2Error::Json {
        path: cpath.display().to_string(),
        source,
    })?;
    fs::write(&cpath, text + "\n").map_err(|source| Gpt2Error::Io {
        path: cpath.display().to_string(),
        source,
    })
}
