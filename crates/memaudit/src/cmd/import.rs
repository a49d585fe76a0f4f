//! `memaudit import --from DIR --out RUN`: a PyTorch-format folder (`memaudit export`'s, or one
//! written by PyTorch with the same names) as a new run folder that `eval`, `sample`, `exposure`
//! and `extract` read. Reading is strict (`memaudit_engine::pytorch::import`: every tensor with
//! its exact name, shape and dtype, none missing or extra, the probe's logits reproduced); the
//! run's checkpoint is written by `memaudit_experiments::saved_run::save_checkpoint` (the
//! engine's atomic `checkpoint::save`).
//!
//! `memaudit import --from-hf DIR --out RUN`: a Hugging Face GPT-2 folder (`config.json`,
//! `model.safetensors` in `GPT2LMHeadModel` layout, `tokenizer.json` or `vocab.json` +
//! `merges.txt`), read by `memaudit_engine::gpt2::import` and `Tokenizer::bpe_from_folder`.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use memaudit_data::Tokenizer;
use memaudit_engine::ModelConfig;
use memaudit_engine::checkpoint::{CHECKPOINT_FORMAT, CheckpointState};
use memaudit_engine::optim::{OptimizerConfig, OptimizerState};
use memaudit_engine::pytorch::{self, ExportVocab, Imported};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::TrainConfig;
use memaudit_experiments::saved_run::save_checkpoint;
use serde_json::{Value, json};

use super::secret_sharer::{CanarySet, MANIFEST_FILE, REFERENCES_FILE};
use crate::Ctx;
use crate::datasets::DataArgs;
use crate::error::user;
use crate::output::{Report, num};
use crate::rundir::{Reuse, RunDir};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A folder written by `memaudit export --format pytorch`, or by PyTorch with the same names
    /// (config.json, model.safetensors, vocab.json for language models; see docs/pytorch.md).
    #[arg(
        long = "from",
        value_name = "DIR",
        required_unless_present = "from_hf",
        conflicts_with = "from_hf"
    )]
    pub from: Option<PathBuf>,
    /// A Hugging Face GPT-2 folder: config.json, model.safetensors (GPT2LMHeadModel layout) and
    /// its byte-level BPE tokenizer (tokenizer.json, or vocab.json + merges.txt).
    #[arg(long = "from-hf", value_name = "DIR")]
    pub from_hf: Option<PathBuf>,
    /// The run folder to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite a run already in --out.
    #[arg(long)]
    pub force: bool,
    /// The data `memaudit eval` of the new run uses (default: the exported run's; for folders
    /// written elsewhere, embedded text at the vocabulary's level).
    #[arg(long, value_name = "NAME")]
    pub data: Option<String>,
    /// Tokens per evaluation window (default: the exported run's, else 50).
    #[arg(long, value_name = "N")]
    pub seq_len: Option<usize>,
}

/// The memaudit tokenizer of a `vocab.json`.
fn tokenizer(v: &ExportVocab, path: &std::path::Path) -> Result<Tokenizer> {
    let file = json!({
        "format": "memaudit-tokenizer/1",
        "kind": v.kind,
        "tokens": v.tokens,
        "unk": v.unk,
        "eos": v.eos,
    });
    Tokenizer::from_json(&file.to_string()).map_err(|e| {
        user(format!(
            "{}: not a memaudit vocabulary: {e}",
            path.display()
        ))
    })
}

/// The training settings recorded by memaudit's export, when they describe this model.
fn recorded_train(imp: &Imported) -> Option<TrainConfig> {
    serde_json::from_value::<TrainConfig>(imp.export.memaudit.get("train")?.clone())
        .ok()
        .filter(|t| t.model == imp.config)
}

/// Settings for a model whose training is unknown (written by PyTorch): run.json needs a
/// training config; `imported.train_settings` says these are placeholders.
fn placeholder_train(model: &ModelConfig, optimizer: Option<&OptimizerConfig>) -> TrainConfig {
    TrainConfig {
        model: model.clone(),
        optimizer: optimizer.cloned().unwrap_or(OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }),
        schedule: Default::default(),
        epochs: 1,
        batch_size: 1,
        physical_batch: None,
        sampling: SamplingMode::Shuffle,
        seed: 0,
        privacy: None,
        seeded_noise: false,
    }
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    if args.seq_len == Some(0) {
        return Err(user("--seq-len must be at least 1"));
    }
    if let Some(dir) = &args.from_hf {
        return run_hf(args, dir);
    }
    let from = args
        .from
        .as_ref()
        .expect("clap requires --from or --from-hf");
    if !from.is_dir() {
        return Err(user(format!("--from {}: not a folder", from.display())));
    }
    let imp = pytorch::import(from).map_err(|e| user(e.to_string()))?;
    let is_lm = matches!(
        imp.config,
        ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. }
    );
    let vocab_path = from.join(pytorch::VOCAB_FILE);
    let tok = match (&imp.vocab, is_lm) {
        (Some(v), true) => Some(tokenizer(v, &vocab_path)?),
        (None, true) => {
            return Err(user(format!(
                "{}: not found; a language model needs its vocabulary",
                vocab_path.display()
            )));
        }
        (Some(_), false) => unreachable!("the engine refuses a vocabulary for a non-LM"),
        (None, false) => None,
    };
    let recorded = recorded_train(&imp);
    let train = recorded
        .clone()
        .unwrap_or_else(|| placeholder_train(&imp.config, imp.optimizer.as_ref().map(|(c, _)| c)));
    let mut data: DataArgs = imp
        .export
        .memaudit
        .get("data")
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .unwrap_or_else(|| DataArgs {
            data: "embedded".into(),
            data_dir: None,
            level: imp.vocab.as_ref().map_or("char".into(), |v| v.kind.clone()),
            seq_len: 50,
            valid_fraction: 0.1,
            max_train: None,
            vocab_size: 10_000,
            standardize: false,
        });
    let data_recorded = imp.export.memaudit.get("data").is_some();
    if let Some(d) = &args.data {
        data.data = d.clone();
    }
    if let Some(n) = args.seq_len {
        data.seq_len = n;
    }
    let has_manifest = from.join(MANIFEST_FILE).is_file();
    if let (true, Some(tok)) = (has_manifest, &tok) {
        // Refuse canaries that do not fit this vocabulary before anything is written.
        CanarySet::load(from, None, tok)?;
    }

    let config = json!({
        "train": train,
        "data": data,
        "imported_from": from.display().to_string(),
    });
    let mut rd = RunDir::open(
        &args.out,
        "import",
        &config,
        None,
        Reuse {
            force: args.force,
            resume: false,
        },
    )?;
    if let Some(tok) = &tok {
        tok.save(&rd.file("tokenizer.json"))
            .context("saving the tokenizer")?;
    }
    if has_manifest {
        for f in [MANIFEST_FILE, REFERENCES_FILE] {
            let src = from.join(f);
            if src.is_file() {
                fs::copy(&src, rd.file(f)).with_context(|| format!("copying {}", src.display()))?;
            }
        }
    }
    let step = imp
        .export
        .memaudit
        .get("step")
        .and_then(Value::as_u64)
        .or(imp.optimizer.as_ref().map(|(_, s)| s.step))
        .unwrap_or(0);
    let epoch = imp
        .export
        .memaudit
        .get("epoch")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let optimizer = imp
        .optimizer
        .as_ref()
        .map_or_else(OptimizerState::default, |(_, s)| s.clone());
    let state = CheckpointState {
        format: CHECKPOINT_FORMAT,
        model: imp.config.clone(),
        step,
        epoch,
        optimizer_buffers: Vec::new(),
        trainer: json!({ "imported_from": from.display().to_string() }),
    };
    save_checkpoint(&rd.checkpoints(), &imp.params, &optimizer, &state)
        .map_err(|e| user(e.to_string()))?;
    let family = pytorch::family(&imp.config);
    let probe = imp.probe.as_ref().map(|p| {
        json!({
            "relative_difference": num(p.relative_difference),
            "values": p.values,
            "tolerance": num(pytorch::PROBE_TOLERANCE),
        })
    });
    let record = json!({
        "from": from.display().to_string(),
        "family": family,
        "parameters": imp.params.len(),
        "step": step,
        "optimizer_state": imp.optimizer.is_some(),
        "canaries": has_manifest,
        "probe": probe,
        "train_settings": if recorded.is_some() { "recorded by the export" } else { "unknown: placeholders (the folder does not record how it was trained)" },
        "data": if data_recorded || args.data.is_some() { "recorded" } else { "unknown: embedded text assumed; pass --data to evaluate on other data" },
    });
    rd.set("imported", record.clone())?;
    rd.set("results", record.clone())?;
    rd.finish("completed")?;
    if imp.probe.is_none() {
        ctx.note(format!(
            "note: {} has no {}: the weights were checked by name and shape only",
            from.display(),
            pytorch::PROBE_FILE
        ));
    }
    let mut text = format!(
        "imported {family} ({} parameters, step {step}) from {} into {}",
        imp.params.len(),
        from.display(),
        args.out.display()
    );
    if let Some(p) = &imp.probe {
        text += &format!(
            "\nprobe: {} logits reproduced within {:.2e} relative (tolerance {:e})",
            p.values,
            p.relative_difference,
            pytorch::PROBE_TOLERANCE
        );
    }
    if recorded.is_none() {
        text += "\ntraining settings unknown: run.json holds placeholders";
    }
    let mut j = record;
    j["run"] = json!(args.out.display().to_string());
    Ok(Report::new(text, j))
}

/// `--from-hf`: a GPT-2 folder (weights, config, BPE tokenizer) as a run. The tokenizer's size
/// must equal the embedding's; evaluation windows default to the context length (at most 64).
fn run_hf(args: &Args, dir: &std::path::Path) -> Result<Report> {
    use memaudit_engine::gpt2;
    if !dir.is_dir() {
        return Err(user(format!("--from-hf {}: not a folder", dir.display())));
    }
    let imp = gpt2::import(dir).map_err(|e| user(e.to_string()))?;
    let tok = Tokenizer::bpe_from_folder(dir).map_err(|e| user(e.to_string()))?;
    let vocab = imp.config.classes();
    if tok.len() != vocab {
        return Err(user(format!(
            "{}: the tokenizer has {} tokens but config.json's vocab_size (the embedding wte.weight) has {vocab}",
            dir.join("tokenizer.json").display(),
            tok.len()
        )));
    }
    let n_ctx = imp.config.gpt_shape().map_or(64, |g| g.n_ctx);
    let seq_len = args.seq_len.unwrap_or(n_ctx.min(64));
    if seq_len > n_ctx {
        return Err(user(format!(
            "--seq-len {seq_len}: longer than the model's positional table (config.json n_positions = {n_ctx})"
        )));
    }
    let train = placeholder_train(&imp.config, None);
    let data = DataArgs {
        data: args.data.clone().unwrap_or_else(|| "embedded".into()),
        data_dir: None,
        level: "bpe".into(),
        seq_len,
        valid_fraction: 0.1,
        max_train: None,
        vocab_size: vocab,
        standardize: false,
    };
    let config = json!({
        "train": train,
        "data": data,
        "imported_from": dir.display().to_string(),
    });
    let mut rd = RunDir::open(
        &args.out,
        "import",
        &config,
        None,
        Reuse {
            force: args.force,
            resume: false,
        },
    )?;
    tok.save(&rd.file("tokenizer.json"))
        .context("saving the tokenizer")?;
    let state = CheckpointState {
        format: CHECKPOINT_FORMAT,
        model: imp.config.clone(),
        step: 0,
        epoch: 0,
        optimizer_buffers: Vec::new(),
        trainer: json!({ "imported_from": dir.display().to_string() }),
    };
    save_checkpoint(
        &rd.checkpoints(),
        &imp.params,
        &OptimizerState::default(),
        &state,
    )
    .map_err(|e| user(e.to_string()))?;
    let record = json!({
        "from": dir.display().to_string(),
        "family": "gpt2",
        "parameters": imp.params.len(),
        "vocabulary": vocab,
        "tokenizer": "byte-level BPE",
        "n_positions": n_ctx,
        "seq_len": seq_len,
        "tied_head": imp.config.gpt_shape().map(|g| g.tie),
        "transformer_prefix": imp.prefixed,
        "buffers_checked": imp.buffers,
        "train_settings": "unknown: placeholders (the folder does not record how it was trained)",
        "data": if args.data.is_some() { "recorded" } else { "unknown: embedded text assumed; pass --data to evaluate on other data" },
    });
    rd.set("imported", record.clone())?;
    rd.set("results", record.clone())?;
    rd.finish("completed")?;
    let text = format!(
        "imported GPT-2 ({} parameters, {vocab} BPE tokens, context {n_ctx}) from {} into {}\ntraining settings unknown: run.json holds placeholders",
        imp.params.len(),
        dir.display(),
        args.out.display()
    );
    let mut j = record;
    j["run"] = json!(args.out.display().to_string());
    Ok(Report::new(text, j))
}
