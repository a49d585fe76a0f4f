//! `memaudit export --format pytorch`: a run's newest checkpoint as a folder PyTorch loads with no
//! guessing (PyTorch names, config, vocabulary with the canary scoring rule, optimizer state in
//! its own file, a probe of fixed input and logits). The format and its checks live in
//! `memaudit_engine::pytorch`; the run's checkpoints are only read.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memaudit_data::Tokenizer;
use memaudit_engine::ModelConfig;
use memaudit_engine::pytorch::{
    self, CanaryScoring, ExportRequest, ExportVocab, ScoredPosition, ScoredTemplate,
};
use serde_json::json;

use super::eval::load_run;
use super::secret_sharer::{CanarySet, MANIFEST_FILE, REFERENCES_FILE, separator};
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder (`memaudit train`, `secret-sharer`, `import`, ...): its newest checkpoint is
    /// exported.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Export format (pytorch: safetensors weights under torch.nn names, config.json, vocab.json).
    #[arg(long, value_parser = ["pytorch"])]
    pub format: String,
    /// Folder to write (created; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace an earlier export in --out.
    #[arg(long)]
    pub force: bool,
    /// Also copy the run's canary manifest (canaries.json, references.json): the secrets an
    /// auditor needs to score them elsewhere. Leave it out of a model you publish.
    #[arg(long)]
    pub with_canaries: bool,
}

/// Every file an export may write (what --force replaces).
const EXPORT_FILES: [&str; 8] = [
    pytorch::WEIGHTS_FILE,
    pytorch::CONFIG_FILE,
    pytorch::VOCAB_FILE,
    pytorch::OPTIMIZER_FILE,
    pytorch::OPTIMIZER_STATE_FILE,
    pytorch::PROBE_FILE,
    MANIFEST_FILE,
    REFERENCES_FILE,
];

/// Make `out` ready for an export: created when absent; an existing folder must be empty or,
/// with `force`, hold an earlier export (only its files are removed).
fn prepare_out(out: &Path, run: &Path, force: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(user(format!(
            "--out {}: exists and is not a folder",
            out.display()
        )));
    }
    if let (Ok(a), Ok(b)) = (out.canonicalize(), run.canonicalize())
        && a == b
    {
        return Err(user("--out must be another folder than --run"));
    }
    if out.is_dir() {
        let entries: Vec<String> = fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !entries.is_empty() {
            let foreign = entries.iter().find(|n| !EXPORT_FILES.contains(&n.as_str()));
            match (force, foreign) {
                (false, _) => {
                    return Err(user(format!(
                        "--out {}: is not empty; choose another folder or use --force to replace an earlier export",
                        out.display()
                    )));
                }
                (true, Some(f)) => {
                    return Err(user(format!(
                        "--out {}: holds {f}, which is not part of an export; --force only replaces an earlier export",
                        out.display()
                    )));
                }
                (true, None) => {
                    for n in &entries {
                        fs::remove_file(out.join(n))
                            .with_context(|| format!("removing {}", out.join(n).display()))?;
                    }
                }
            }
        }
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create --out {}", out.display()))
}

/// `vocab.json` of a language-model run: its tokens and the canary scoring rule, with the run's
/// canary template in tokens when it has a manifest.
fn vocab(run: &Path, tok: &Tokenizer) -> Result<ExportVocab> {
    let has_manifest = run.join(MANIFEST_FILE).is_file();
    let (context, template) = if has_manifest {
        let set = CanarySet::load(run, None, tok)?;
        // A byte-level BPE run's canaries are not one token per symbol: no scored positions.
        let Some(t) = set.tpl.trie() else {
            return Err(user(format!(
                "--run {}: a byte-level BPE run's canaries are scored rendered whole; its vocab.json cannot describe them as scored positions",
                run.display()
            )));
        };
        (
            t.context().to_vec(),
            Some(ScoredTemplate {
                text: set.manifest.template.clone(),
                prefix_token_ids: t.prefix().to_vec(),
                scored: t
                    .steps()
                    .iter()
                    .map(|s| ScoredPosition {
                        candidates: s.tokens.clone(),
                        slot_position: s.slot_position,
                    })
                    .collect(),
                suffix_token_ids: t.suffix().to_vec(),
            }),
        )
    } else {
        (vec![separator(tok)?], None)
    };
    let name = |id: Option<u32>| id.and_then(|i| tok.token(i)).map(String::from);
    Ok(ExportVocab {
        format: pytorch::VOCAB_FORMAT.into(),
        kind: serde_json::to_value(tok.kind())?
            .as_str()
            .unwrap_or_default()
            .to_string(),
        tokens: tok.tokens().to_vec(),
        unk: name(tok.unk_id()),
        eos: name(tok.eos_id()),
        canary_scoring: CanaryScoring::memaudit(context, template),
    })
}

pub fn run(args: &Args, _ctx: &Ctx) -> Result<Report> {
    let saved = load_run(&args.run)?;
    let cfg = &saved.config.model;
    let is_lm = matches!(cfg, ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. });
    if args.with_canaries && !args.run.join(MANIFEST_FILE).is_file() {
        return Err(user(format!(
            "--with-canaries: {} has no {MANIFEST_FILE}",
            args.run.display()
        )));
    }
    let vocab = match (&saved.tokenizer, is_lm) {
        (Some(tok), true) => Some(vocab(&args.run, tok)?),
        (None, true) => {
            return Err(user(format!(
                "--run {}: a language model without tokenizer.json cannot be exported (its vocabulary is unknown)",
                args.run.display()
            )));
        }
        _ => None,
    };
    prepare_out(&args.out, &args.run, args.force)?;
    if cfg.gpt_shape().is_some() {
        return export_gpt2(
            args,
            cfg,
            &saved.checkpoint.params,
            saved.tokenizer.as_ref(),
        );
    }
    let run_json: serde_json::Value = fs::read(args.run.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let ck = &saved.checkpoint;
    let memaudit = json!({
        "source_run": args.run.display().to_string(),
        "command": run_json.get("command"),
        "step": ck.state.step,
        "epoch": ck.state.epoch,
        "train": saved.config,
        "data": saved.data,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let summary = pytorch::export(
        &args.out,
        &ExportRequest {
            config: cfg,
            params: &ck.params,
            optimizer: Some((&saved.config.optimizer, &ck.optimizer)),
            vocab: vocab.as_ref(),
            memaudit,
        },
    )
    .map_err(|e| user(e.to_string()))?;
    let mut files = summary.files.clone();
    if args.with_canaries {
        for f in [MANIFEST_FILE, REFERENCES_FILE] {
            let src = args.run.join(f);
            if src.is_file() {
                fs::copy(&src, args.out.join(f))
                    .with_context(|| format!("copying {}", src.display()))?;
                files.push(f.to_string());
            }
        }
    }
    let text = format!(
        "exported {} ({} tensors, {} parameters, step {}) to {}:\n  {}\nload it in PyTorch as docs/pytorch.md shows; `memaudit import --from {}` reads it back",
        summary.family,
        summary.tensors,
        summary.parameters,
        ck.state.step,
        args.out.display(),
        files.join("\n  "),
        args.out.display()
    );
    Ok(Report::new(
        text,
        json!({
            "run": args.run.display().to_string(),
            "out": args.out.display().to_string(),
            "format": args.format,
            "family": summary.family,
            "step": ck.state.step,
            "tensors": summary.tensors,
            "parameters": summary.parameters,
            "files": files,
            "probe_max_abs_logit": num(summary.probe_max_abs_logit),
        }),
    ))
}

/// A GPT run in Hugging Face's GPT-2 layout (docs/transformers.md): config.json and
/// model.safetensors, loadable by `GPT2LMHeadModel.from_pretrained(out)`; a byte-level BPE run
/// (an imported GPT-2) also gets its Hugging Face tokenizer.json, so `import --from-hf` reads the
/// folder back.
fn export_gpt2(
    args: &Args,
    cfg: &ModelConfig,
    params: &[f32],
    tok: Option<&Tokenizer>,
) -> Result<Report> {
    memaudit_engine::gpt2::export(&args.out, cfg, params).map_err(|e| user(e.to_string()))?;
    let mut files = vec![
        memaudit_engine::gpt2::CONFIG_FILE,
        memaudit_engine::gpt2::WEIGHTS_FILE,
    ];
    if let Some(json) = tok.and_then(Tokenizer::huggingface_json) {
        let p = args.out.join("tokenizer.json");
        crate::rundir::write_atomic(&p, json.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
        files.push("tokenizer.json");
    }
    Ok(Report::new(
        format!(
            "exported a GPT ({} parameters) in GPT-2 layout to {}:\n  {}\nload it with transformers' GPT2LMHeadModel.from_pretrained (docs/transformers.md)",
            params.len(),
            args.out.display(),
            files.join("\n  ")
        ),
        json!({
            "run": args.run.display().to_string(),
            "out": args.out.display().to_string(),
            "format": "gpt2",
            "family": "gpt",
            "parameters": params.len(),
            "files": files,
        }),
    ))
}
