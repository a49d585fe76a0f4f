//! One Secret Sharer run: canaries drawn and inserted, a language model trained into the run
//! folder with the canaries' exposure tracked (every epoch, and every `track_every` steps), then
//! the final exposure measurement, the extraction search and (with `audit_canaries`) the
//! black-box one-run audit.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use memaudit_audit::{
    Canary, CanaryManifest, ExposureLog, SkewNormal, WalkStats, check_insertion_named,
    generate_canaries_with, insert_canaries,
};
use memaudit_data::{Tokenizer, TokenizerKind};
use memaudit_engine::datasets::TokenWindowDataset;
use memaudit_engine::train::{Dataset, EpochInfo, StepInfo, Trainer};
use memaudit_engine::{EngineError, Model, ModelConfig};
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

use super::canaries::{
    CanarySet, CanaryTokens, derive_seed, insertion_separator, parse_template, render_candidates,
    template_tokens, tokenize_template,
};
use super::measure::{
    CanaryResult, RepSummary, audit, lm_for_canaries, measure, rendered_extraction_cost,
};
use super::{Audit, SecretSharerConfig};
use crate::audit_canaries::{self, BlackBoxAudit};
use crate::config::ExperimentConfig;
use crate::error::{ExperimentError, Result, invalid};
use crate::num::{Num, opt};
use crate::observer::{MetricsRow, Observer};
use crate::rundir::{RunDir, write_atomic};
use crate::train::{InputShape, TrainHooks, TrainRun, train_config, train_in_folder};

/// Files of a secret-sharer run folder (besides the canaries' and the trainer's).
pub const EXPOSURE_CSV: &str = "exposure.csv";
pub const EXPOSURE_JSON: &str = "exposure.json";
pub const RESULTS_FILE: &str = "secret_sharer.json";

/// What a caller may add to a run.
#[derive(Default)]
pub struct RunHooks {
    /// Called half way through the n-th checkpoint the trainer writes (parameters on disk,
    /// logs, sidecar and marker not): the CLI's crash tests abort the process there.
    pub checkpoint_midway: Option<memaudit_engine::train::MidwayHook>,
}

/// A finished Secret Sharer run. Serialised, it is `memaudit secret-sharer --json`.
#[derive(Serialize)]
pub struct SecretSharerResult {
    /// log2 |R|, the canary's randomness space.
    pub log2_space: f64,
    /// The run's epsilon (its ledger's), `None` for a non-private run.
    pub epsilon: Option<Num>,
    pub valid_loss: Option<Num>,
    pub canaries: Vec<CanaryResult>,
    /// The run folder.
    pub run: String,
    /// Where the run's HTML report goes (`report.html` in the run folder; the CLI writes it).
    pub report: String,
    pub by_repetitions: Vec<RepSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub black_box_audit: Option<BlackBoxAudit>,
    /// A byte-level BPE run: how its candidates were tokenized (every one rendered whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenization: Option<serde_json::Value>,
    /// Everything else, for rendering and for callers that go on with the model.
    #[serde(skip)]
    pub detail: SecretSharerDetail,
}

/// What a run hands back besides its numbers (the demo combines two runs; the CLI draws them).
pub struct SecretSharerDetail {
    pub set: CanarySet,
    pub audit: Audit,
    /// Exposure before training, after every epoch and every `track_every` steps.
    pub log: ExposureLog,
    pub train: TrainRun,
    /// Whether the final measurement has exact ranks.
    pub exact: bool,
    pub steps_per_epoch: u64,
    pub params: Vec<f32>,
    pub tokenizer: Tokenizer,
    /// The run's effective configuration (its seed drawn and recorded).
    pub config: SecretSharerConfig,
    pub epochs_trained: u64,
    /// Training windows of `data.seq_len` tokens (N).
    pub windows: usize,
}

/// The extraction search as secret_sharer.json records it.
#[derive(Serialize)]
struct ExtractionRecord {
    expansions: u64,
    lm_calls: u64,
    stop: memaudit_audit::StopReason,
    exact: bool,
    top: Vec<ExtractedRecord>,
}

#[derive(Serialize)]
struct ExtractedRecord {
    text: String,
    log_perplexity: Num,
    expansions: u64,
}

#[derive(Serialize)]
struct SkewNormalRecord {
    shape: f64,
    loc: f64,
    scale: f64,
    converged: bool,
}

/// secret_sharer.json: the final measurement in full.
#[derive(Serialize)]
struct ResultsFile<'a> {
    log2_space: f64,
    space_size: String,
    epsilon: Option<Num>,
    valid_loss: Option<Num>,
    references: usize,
    skew_normal: SkewNormalRecord,
    by_repetitions: &'a [RepSummary],
    canaries: &'a [CanaryResult],
    exact_walk: Option<WalkStats>,
    measure_seconds: f64,
    extract_seconds: f64,
    extraction: Option<ExtractionRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokenization: Option<serde_json::Value>,
}

/// Run the experiment (train with canaries, track and audit them, write the run folder).
pub fn run(cfg: &SecretSharerConfig, observer: &mut dyn Observer) -> Result<SecretSharerResult> {
    run_with(cfg, observer, RunHooks::default())
}

/// [`run`] with the caller's hooks.
pub fn run_with(
    cfg: &SecretSharerConfig,
    observer: &mut dyn Observer,
    hooks: RunHooks,
) -> Result<SecretSharerResult> {
    cfg.validate()?;
    let template = parse_template(&cfg.canary.template)?;
    let data = &cfg.data;
    let corpus = data.text()?;
    let level_kind = match data.level.as_str() {
        "char" => TokenizerKind::Char,
        "word" => TokenizerKind::Word,
        "bpe" => TokenizerKind::Bpe,
        l => return invalid("data.level", l, "use char, word or bpe"),
    };
    // Word models get the slot symbols as tokens (PTB has no digits as words); with
    // extend_vocab, every token of the template. A byte-level BPE covers every byte.
    let extra = match (level_kind, cfg.canary.extend_vocab) {
        (TokenizerKind::Bpe, _) => Vec::new(),
        (_, true) => template_tokens(&template, level_kind, true),
        (TokenizerKind::Word, false) => template_tokens(&template, level_kind, false),
        (TokenizerKind::Char, false) => Vec::new(),
    };
    let tok = data.tokenizer(&corpus, &extra)?;
    let sep = insertion_separator(&tok)?;
    // Under BPE a canary is not one token per symbol (digit runs merge): every candidate is
    // rendered and tokenized whole, read after the newline that starts its line.
    let tpl = if level_kind == TokenizerKind::Bpe {
        let rc = render_candidates(&template, &tok, &[sep], u128::from(cfg.exposure.exact_limit))
            .map_err(|e| match e {
                memaudit_audit::AuditError::SpaceAboveLimit { size, limit } => {
                    ExperimentError::Invalid {
                        field: "exposure.exact_limit".into(),
                        value: limit.to_string(),
                        reason: format!(
                            "a byte-level BPE run renders, tokenizes and holds every candidate, and the canary has {size}; raise the limit or use a smaller slot space"
                        ),
                    }
                }
                e => ExperimentError::Invalid {
                    field: "canary.template".into(),
                    value: format!("{:?}", template.source()),
                    reason: e.to_string(),
                },
            })?;
        CanaryTokens::Rendered(rc)
    } else {
        CanaryTokens::Trie(tokenize_template(
            &template,
            &tok,
            "; set canary.extend_vocab to add the canary's characters to the vocabulary",
        )?)
    };
    let seed = cfg.run.seed();
    let mut effective = cfg.clone();
    effective.run.seed = Some(seed);
    let cseed = cfg.canary.canary_seed.unwrap_or(seed);
    // An audit error naming the setting (and its value) that caused it.
    let setting =
        |field: &str, value: String, e: &dyn std::fmt::Display| ExperimentError::Invalid {
            field: field.to_string(),
            value,
            reason: e.to_string(),
        };
    let reps = || format!("{:?}", cfg.canary.repetitions);

    // Canaries, held-out canaries, insertion.
    let mut manifest = generate_canaries_with(
        tpl.template(),
        tpl.context(),
        &|i| tpl.canary_tokens(i),
        &cfg.canary.repetitions,
        cfg.canary.canaries,
        &[sep],
        cseed,
    )
    .map_err(|e| setting("canary.canaries", cfg.canary.canaries.to_string(), &e))?;
    if cfg.canary.held_out > 0 {
        let taken = manifest.secret_indices();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(derive_seed(cseed, 3));
        let held = tpl
            .space()
            .sample_distinct(cfg.canary.held_out, &taken, &mut rng)
            .map_err(|e| setting("canary.held_out", cfg.canary.held_out.to_string(), &e))?;
        for (i, idx) in held.into_iter().enumerate() {
            let audit_err = |e| ExperimentError::audit("held-out canaries", e);
            manifest.canaries.push(Canary {
                id: format!("r0-{i}"),
                text: tpl
                    .template()
                    .render(idx)
                    .map_err(|e| ExperimentError::protocol(format!("held-out canary {i}: {e}")))?,
                token_ids: tpl.canary_tokens(idx).map_err(audit_err)?,
                secret_index: idx,
                repetitions: 0,
                positions: Vec::new(),
            });
        }
    }
    let w = data.seq_len;
    let mut stream = tok.encode(&corpus.train)?;
    if let Some(m) = data.max_train {
        // Keep whole lines up to about max_train windows; canaries are inserted into what is
        // kept (so every insertion is trained on).
        let cut = m.saturating_mul(w);
        if stream.len() > cut + 1 {
            let end = stream[..cut]
                .iter()
                .rposition(|&t| t == sep)
                .map_or(cut + 1, |i| i + 1);
            stream.truncate(end);
        }
    }
    // Line starts, away from the last two windows: insertions there could fall into the
    // trailing partial window, which is never trained on.
    let limit = stream.len().saturating_sub(2 * w);
    let bounds: Vec<usize> = stream[..limit]
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t == sep)
        .map(|(i, _)| i + 1)
        .filter(|&b| b < limit)
        .collect();
    let stream = insert_canaries(&stream, &bounds, w, &mut manifest, derive_seed(cseed, 1))
        .map_err(|e| setting("canary.repetitions", reps(), &e))?;
    if level_kind == TokenizerKind::Bpe {
        check_bpe_insertions(&tok, &stream, &manifest, sep)?;
    }
    let train = TokenWindowDataset::new(stream, w)?;
    let n = train.len();
    let covered = n * w + 1;
    for c in &manifest.canaries {
        if let Some(&p) = c
            .positions
            .iter()
            .find(|&&p| p + c.token_ids.len() + 1 > covered)
        {
            return Err(ExperimentError::protocol(format!(
                "internal: canary {} at {p} lies outside the training windows",
                c.id
            )));
        }
    }
    // Audit canaries join the training windows before N is counted (they are training examples).
    let (train, n, black_box) =
        audit_canaries::insert_windows(train, cfg.canary.audit_canaries, &tok, cseed)?;
    let mut valid_tokens = tok.encode(&corpus.valid)?;
    if let Some(m) = data.max_train {
        valid_tokens.truncate(m * w + 1);
    }
    let valid = TokenWindowDataset::new(valid_tokens, w)?;
    let mut set = CanarySet {
        tpl,
        manifest,
        references: Vec::new(),
    };
    let n_refs = set.draw_references(cfg.exposure.references, derive_seed(cseed, 2))?;
    if n_refs < cfg.exposure.references {
        observer.note(&format!(
            "note: {n_refs} references (all candidates that are not canaries; --references asked for {})",
            cfg.exposure.references
        ));
    }
    if n_refs < 2 {
        return invalid(
            "canary.template",
            format!("{:?}", cfg.canary.template),
            "the randomness space leaves fewer than 2 reference candidates; use a larger slot space",
        );
    }

    // Model and trainer.
    let model_cfg = cfg.model.config(&InputShape::Tokens { vocab: tok.len() })?;
    if !matches!(
        model_cfg,
        ModelConfig::LstmLm { .. } | ModelConfig::GruLm { .. } | ModelConfig::Gpt { .. }
    ) {
        return invalid(
            "model.model",
            cfg.model.model.as_deref().unwrap_or(""),
            "the Secret Sharer needs a language model (lstm, gru or gpt)",
        );
    }
    if let Some(s) = model_cfg.gpt_shape()
        && w > s.n_ctx
    {
        return invalid(
            "data.seq_len",
            w,
            format!(
                "is longer than the GPT's positional table (model.gpt_context {})",
                s.n_ctx
            ),
        );
    }
    let model = model_cfg.build()?;
    if cfg.run.batch_size == 0 || cfg.run.batch_size > n {
        return invalid(
            "run.batch_size",
            cfg.run.batch_size,
            format!("must be between 1 and the number of training windows {n}"),
        );
    }
    let train_cfg = train_config(
        &cfg.privacy,
        &cfg.optim,
        cfg.run.shape(seed),
        &model,
        &model_cfg,
        n,
        observer,
    )?;
    let spe = memaudit_engine::ledger::steps_per_epoch(
        train_cfg.sampling,
        n as u64,
        train_cfg.batch_size as u64,
    );
    let exact_final = cfg.exposure.exact_for(set.tpl.space().size())?;
    if let (Some(cost), Some(s)) = (rendered_extraction_cost(&set), cfg.extraction.settings()?)
        && cost > s.budget
    {
        return invalid(
            "extraction.extract_budget",
            s.budget,
            format!(
                "a byte-level BPE run's extraction scores every candidate rendered whole: {cost} LM rows for the {} candidates; raise the budget to at least {cost}, or set it to 0 to skip extraction",
                set.tpl.space().size()
            ),
        );
    }
    let exact_track =
        exact_final && set.tpl.space().size() <= u128::from(cfg.tracking.track_exact_limit);
    let extract_settings = cfg.extraction.settings()?;
    // What must match for a resume (the trainer's config, the data and the protocol settings).
    let run_cfg = json!({
        "train": train_cfg,
        "data": data,
        "canary": cfg.canary,
        "exposure": cfg.exposure,
        "extraction": cfg.extraction,
        "tracking": cfg.tracking,
    });
    let mut rd = RunDir::open(
        &cfg.run.out,
        "secret-sharer",
        &run_cfg,
        Some(seed),
        cfg.run.reuse(),
    )?;
    let tok_path = rd.file("tokenizer.json");
    tok.save(&tok_path).map_err(|e| ExperimentError::InFile {
        path: tok_path.clone(),
        message: format!("saving the tokenizer: {e}"),
    })?;
    set.save(&rd.path)?;
    if let Some(c) = &black_box {
        audit_canaries::save_manifest(&rd, c, Some(&tok), None)?;
    }
    let mut trainer = Trainer::new(train_cfg.clone(), n, Some(&rd.checkpoints()), rd.resuming)?;
    if let Some(h) = hooks.checkpoint_midway {
        trainer.set_checkpoint_midway_hook(h);
    }
    if trainer.noise_is_seeded() {
        observer.note("note: the DP noise is seeded from --seed (--seeded-noise): anyone with the seed can regenerate it; use only for reproducible research");
    }
    let inserted: usize = set
        .manifest
        .canaries
        .iter()
        .map(|c| c.repetitions as usize)
        .sum();
    observer.note(&format!(
        "{} canaries of {:?} (|R| = {}, log2|R| = {:.1}): {} inserted {} times in all, {} held out; {} training windows of {w} tokens; {} references",
        set.manifest.canaries.len(),
        set.manifest.template,
        set.tpl.space().size(),
        set.tpl.space().log2_size(),
        set.manifest
            .canaries
            .iter()
            .filter(|c| c.repetitions > 0)
            .count(),
        inserted,
        cfg.canary.held_out,
        n,
        set.references.len()
    ));

    // Exposure during training. The log is stored in every checkpoint with metrics.csv: a resume
    // restores it from the checkpoint it starts from (rows measured after it are dropped and
    // measured again by the resumed run), and never re-measures step 0 with trained weights.
    let csv_path = rd.file(EXPOSURE_CSV);
    let log = if trainer.resumed_from.is_some() {
        restore_exposure_log(&csv_path, &trainer)?
    } else {
        let lm = lm_for_canaries(&model_cfg, &trainer.params, &set)?;
        let m = measure(
            lm.as_ref(),
            &set,
            exact_track,
            u128::from(cfg.tracking.track_exact_limit),
        )
        .map_err(|e| ExperimentError::audit("exposure before training", e))?;
        let mut log = ExposureLog::default();
        for r in m.records(&set, 0, 0) {
            log.push(r);
        }
        write_exposure_csv(&log, &csv_path)?;
        log
    };
    let shared = SharedObserver(RefCell::new(observer));
    let tracker = RefCell::new(Tracker {
        set: &set,
        model: model_cfg.clone(),
        exact: exact_track,
        exact_limit: u128::from(cfg.tracking.track_exact_limit),
        log,
        csv: csv_path.clone(),
        observer: &shared,
    });
    let epoch_hook = |e: &EpochInfo, _m: &Model, p: &[f32]| {
        tracker.borrow_mut().record(e.epoch as u32, e.step, p)
    };
    let logs_hook = || {
        let bytes = tracker
            .borrow()
            .log
            .to_csv_bytes()
            .map_err(|e| EngineError::Config(e.to_string()))?;
        Ok(vec![(EXPOSURE_CSV.to_string(), bytes)])
    };
    let every = cfg.tracking.track_every;
    let step_hook = |s: &StepInfo, _m: &Model, p: &[f32]| {
        if every > 0
            && s.step.is_multiple_of(every)
            && !s.step.is_multiple_of(s.steps_per_epoch.max(1))
        {
            tracker.borrow_mut().record(s.epoch as u32, s.step, p)
        } else {
            Ok(())
        }
    };
    let trained = train_in_folder(
        &mut rd,
        &mut trainer,
        train.as_ref(),
        Some(&valid as &dyn Dataset),
        &corpus.name,
        TrainHooks {
            epoch: Some(Box::new(epoch_hook)),
            step: Some(Box::new(step_hook)),
            logs: Some(Box::new(logs_hook)),
        },
        &mut &shared,
    )?;
    let log = tracker.into_inner().log;
    let observer = shared.0.into_inner();
    log.write_json(&rd.file(EXPOSURE_JSON))
        .map_err(|e| ExperimentError::audit("writing exposure.json", e))?;

    // The final audit.
    observer.note(&format!(
        "measuring exposure{} of {} canaries{}",
        match (exact_final, &set.tpl) {
            (false, _) => "",
            (true, CanaryTokens::Trie(_)) => " (exact, trie walk over R)",
            (true, CanaryTokens::Rendered(_)) => {
                " (exact, every candidate of R rendered, tokenized whole and scored)"
            }
        },
        set.manifest.canaries.len(),
        if extract_settings.is_some() {
            " and extracting"
        } else {
            ""
        }
    ));
    let lm = lm_for_canaries(&model_cfg, &trainer.params, &set)?;
    let a = audit(
        lm.as_ref(),
        &set,
        exact_final,
        u128::from(cfg.exposure.exact_limit),
        extract_settings,
    )?;
    let epsilon = trainer.epsilon()?;
    let valid_loss = trained.epochs.last().and_then(|e| e.valid_loss);
    let summary = a.summary(&set);
    let canaries = a.canaries(&set);
    let file = ResultsFile {
        log2_space: set.tpl.space().log2_size(),
        space_size: set.tpl.space().size().to_string(),
        epsilon: opt(epsilon),
        valid_loss: opt(valid_loss),
        references: set.references.len(),
        skew_normal: skew_normal_record(&a.m.fit, a.m.fit_converged),
        by_repetitions: &summary,
        canaries: &canaries,
        tokenization: set.tpl.rendered().map(crate::rendered::describe),
        exact_walk: a.m.walk,
        measure_seconds: a.m.seconds,
        extract_seconds: a.extract_seconds,
        extraction: a.extraction.as_ref().map(|(s, _)| ExtractionRecord {
            expansions: s.expansions,
            lm_calls: s.lm_calls,
            stop: s.stop,
            exact: s.exact,
            top: s
                .candidates
                .iter()
                .map(|c| ExtractedRecord {
                    text: set.render(c.index),
                    log_perplexity: Num(c.log_perplexity),
                    expansions: c.expansions,
                })
                .collect(),
        }),
    };
    write_atomic(
        &rd.file(RESULTS_FILE),
        serde_json::to_string_pretty(&file)?.as_bytes(),
    )?;
    let black_box_audit = match &black_box {
        Some(c) => Some(audit_canaries::audit(
            &rd,
            &trainer,
            c,
            Some(&tok),
            cfg.privacy.delta,
        )?),
        None => None,
    };
    let mut run_results = serde_json::to_value(&trained.summary)?;
    run_results["secret_sharer"] = json!({
        "log2_space": set.tpl.space().log2_size(),
        "by_repetitions": summary,
    });
    if let Some(a) = &black_box_audit {
        run_results["black_box_audit"] = serde_json::to_value(a)?;
    }
    rd.set("results", run_results)?;
    rd.finish("completed")?;

    Ok(SecretSharerResult {
        log2_space: set.tpl.space().log2_size(),
        epsilon: opt(epsilon),
        valid_loss: opt(valid_loss),
        canaries,
        run: rd.path.display().to_string(),
        report: rd.file("report.html").display().to_string(),
        by_repetitions: summary,
        black_box_audit,
        tokenization: set.tpl.rendered().map(crate::rendered::describe),
        detail: SecretSharerDetail {
            exact: exact_final,
            steps_per_epoch: spe,
            params: trainer.params.clone(),
            tokenizer: tok,
            config: effective,
            epochs_trained: trainer.epoch,
            windows: n,
            set,
            audit: a,
            log,
            train: trained,
        },
    })
}

fn skew_normal_record(fit: &SkewNormal, converged: bool) -> SkewNormalRecord {
    SkewNormalRecord {
        shape: fit.shape,
        loc: fit.loc,
        scale: fit.scale,
        converged,
    }
}

/// The caller's observer, shared by the training loop and the exposure tracker (which runs
/// inside the loop's hooks, one at a time).
struct SharedObserver<'o>(RefCell<&'o mut dyn Observer>);

impl Observer for &SharedObserver<'_> {
    fn progress(&mut self, stage: &str, step: u64, total: u64) {
        self.0.borrow_mut().progress(stage, step, total);
    }
    fn note(&mut self, text: &str) {
        self.0.borrow_mut().note(text);
    }
    fn metrics(&mut self, row: &MetricsRow) {
        self.0.borrow_mut().metrics(row);
    }
    fn cancelled(&self) -> bool {
        self.0.borrow().cancelled()
    }
}

/// Exposure every epoch (and every N steps), kept in memory and in exposure.csv.
struct Tracker<'s, 'o> {
    set: &'s CanarySet,
    model: ModelConfig,
    exact: bool,
    exact_limit: u128,
    log: ExposureLog,
    csv: PathBuf,
    observer: &'s SharedObserver<'o>,
}

impl Tracker<'_, '_> {
    fn record(&mut self, epoch: u32, step: u64, params: &[f32]) -> memaudit_engine::Result<()> {
        let lm = lm_for_canaries(&self.model, params, self.set)?;
        let m = measure(lm.as_ref(), self.set, self.exact, self.exact_limit)
            .map_err(|e| EngineError::Config(format!("exposure tracking at step {step}: {e}")))?;
        let recs = m.records(self.set, epoch, step);
        let mut parts = Vec::new();
        let mut values = Vec::new();
        for r in self.set.repetition_counts() {
            let v: Vec<f64> = recs
                .iter()
                .filter(|x| x.repetitions == r)
                .filter_map(|x| x.exposure_exact.or(x.exposure_interpolated))
                .collect();
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            parts.push(format!(
                "{}: {mean:.2}",
                if r == 0 {
                    "held out".to_string()
                } else {
                    format!("x{r}")
                },
            ));
            values.push((r, mean));
        }
        let mut obs = self.observer;
        obs.note(&format!(
            "  exposure at step {step} ({}): {} ({:.1}s)",
            if self.exact { "exact" } else { "interpolated" },
            parts.join(", "),
            m.seconds
        ));
        obs.metrics(&MetricsRow {
            stage: "exposure".into(),
            epoch: f64::from(epoch),
            step: Some(step),
            values: values
                .into_iter()
                .map(|(r, mean)| (exposure_column(r), Some(mean)))
                .collect(),
        });
        for r in recs {
            self.log.push(r);
        }
        write_exposure_csv(&self.log, &self.csv).map_err(|e| EngineError::Config(e.to_string()))
    }
}

/// The metrics column of the mean exposure of canaries inserted `r` times.
fn exposure_column(r: u32) -> &'static str {
    // Column names are static: the usual counts get their own, the rest share one.
    match r {
        0 => "exposure_held_out",
        1 => "exposure_x1",
        2 => "exposure_x2",
        4 => "exposure_x4",
        8 => "exposure_x8",
        16 => "exposure_x16",
        32 => "exposure_x32",
        64 => "exposure_x64",
        _ => "exposure_other",
    }
}

/// exposure.csv, rewritten whole and atomically (a crash leaves the old or the new file).
fn write_exposure_csv(log: &ExposureLog, path: &Path) -> Result<()> {
    let bytes = log
        .to_csv_bytes()
        .map_err(|e| ExperimentError::audit("writing exposure.csv", e))?;
    write_atomic(path, &bytes)
}

/// The exposure log a resumed run continues: the copy in the checkpoint it resumes from (the
/// folder's exposure.csv is rewritten to it). A checkpoint written before logs were stored with
/// checkpoints falls back to the folder's file without its rows past the checkpoint, and refuses
/// a file it cannot read rather than losing the history.
fn restore_exposure_log(csv_path: &Path, trainer: &Trainer) -> Result<ExposureLog> {
    let in_file = |message: String| ExperimentError::InFile {
        path: csv_path.to_path_buf(),
        message,
    };
    let log = match trainer.resumed_log(EXPOSURE_CSV) {
        Some(bytes) => ExposureLog::from_csv_bytes(bytes, "the checkpoint's exposure.csv")
            .map_err(|e| in_file(format!("{e}; start the run again with --force")))?,
        None => {
            let mut log = ExposureLog::read_csv(csv_path).map_err(|e| {
                in_file(format!(
                    "{e}: its checkpoint predates stored logs, so the exposure history cannot be restored; start the run again with --force"
                ))
            })?;
            log.records.retain(|r| r.step <= trainer.step);
            log
        }
    };
    if !log.records.iter().any(|r| r.step == 0) {
        return Err(in_file(
            "the exposure history lacks its measurement before training; start the run again with --force".into(),
        ));
    }
    write_exposure_csv(&log, csv_path)?;
    Ok(log)
}

/// Every insertion of a byte-level BPE run keeps the canary's own tokens. The canaries were
/// spliced into the token stream at line starts (after a newline token) as `canary tokens ++
/// newline`; that is the training text with `canary + "\n"` inserted as text exactly when the
/// tokenizer cuts that text into the same tokens. Checked two ways: each insertion with
/// [`check_insertion_named`] between its neighbouring lines (the error names the canary, the side
/// that merged and the tokens), then the whole stream re-tokenized from its text (merges that
/// reach further than a line).
fn check_bpe_insertions(
    tok: &Tokenizer,
    stream: &[u32],
    manifest: &CanaryManifest,
    sep: u32,
) -> Result<()> {
    let encode = |t: &str| tok.encode(t).map_err(|e| e.to_string());
    let name = |t: u32| {
        tok.token(t)
            .map_or_else(|| t.to_string(), |s| format!("{s:?}"))
    };
    let text = |ids: &[u32]| -> Result<String> { Ok(tok.decode(ids)?) };
    let term = manifest.terminator_tokens.len();
    for c in &manifest.canaries {
        for &p in &c.positions {
            // The line before (back to the previous newline token, exclusive) and the line after
            // the canary's own newline (to the next newline token, inclusive).
            let start = stream[..p.saturating_sub(1)]
                .iter()
                .rposition(|&t| t == sep)
                .map_or(0, |i| i + 1);
            let end_canary = p + c.token_ids.len();
            let after_from = end_canary + term;
            let end = stream[after_from.min(stream.len())..]
                .iter()
                .position(|&t| t == sep)
                .map_or(stream.len(), |i| after_from + i + 1);
            let before = text(&stream[start..p])?;
            let after = text(&stream[end_canary..end])?;
            check_insertion_named(&encode, &name, &before, &c.text, &after).map_err(|e| {
                ExperimentError::Invalid {
                    field: "canary.template".into(),
                    value: format!("{:?}", manifest.template),
                    reason: format!("canary {} inserted at a line start: {e}", c.id),
                }
            })?;
        }
    }
    let again = tok.encode(&text(stream)?)?;
    if again.as_slice() != stream {
        let d = again
            .iter()
            .zip(stream)
            .position(|(a, b)| a != b)
            .unwrap_or(again.len().min(stream.len()));
        let near = manifest
            .canaries
            .iter()
            .flat_map(|c| c.positions.iter().map(move |&p| (p, c)))
            .min_by_key(|&(p, _)| p.abs_diff(d))
            .map_or(String::new(), |(p, c)| {
                format!(" (the nearest insertion: canary {} at token {p})", c.id)
            });
        return Err(ExperimentError::Invalid {
            field: "canary.template".into(),
            value: format!("{:?}", manifest.template),
            reason: format!(
                "the training text with the canaries inserted tokenizes differently from the stream trained on, first at token {d}{near}: {} here vs {} re-tokenized; put a separator around the canary",
                name(stream.get(d).copied().unwrap_or(u32::MAX)),
                name(again.get(d).copied().unwrap_or(u32::MAX)),
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use memaudit_audit::RenderedCandidates;

    use super::*;

    fn fixture_json() -> serde_json::Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../memaudit-data/tests/data/bpe_digits/tokenizer.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    /// The digit-merging fixture BPE (scripts/make_bpe_fixture.py).
    fn fixture() -> Tokenizer {
        Tokenizer::bpe_from_json(&fixture_json().to_string()).unwrap()
    }

    /// The fixture plus GPT-2's merge of two newlines into one token ("ĊĊ", id 628 in GPT-2).
    fn with_double_newline() -> Tokenizer {
        let mut v = fixture_json();
        let n = v["model"]["vocab"].as_object().unwrap().len();
        v["model"]["vocab"]["ĊĊ"] = json!(n);
        v["model"]["merges"]
            .as_array_mut()
            .unwrap()
            .push(json!(["Ċ", "Ċ"]));
        Tokenizer::bpe_from_json(&v.to_string()).unwrap()
    }

    const CORPUS: &str = "Call me Ishmael. Some years ago, never mind how long precisely,\n\
        having little or no money in my purse, and 1851 things on shore,\n\
        I thought I would sail about a little and see the watery part of the world.\n\
        It is a way I have of driving off the spleen, 42 times a day.\n\n\
        Whenever I find myself growing grim about the mouth;\n";

    /// Canaries of `template` inserted into the corpus as the run inserts them (line starts,
    /// after the newline token, each followed by one).
    fn spliced(
        tok: &Tokenizer,
        template: &str,
    ) -> (Vec<u32>, CanaryManifest, u32, RenderedCandidates) {
        let sep = insertion_separator(tok).unwrap();
        let tpl = parse_template(template).unwrap();
        let rc = render_candidates(&tpl, tok, &[sep], 1_000_000).unwrap();
        let mut m = generate_canaries_with(
            rc.template(),
            rc.context(),
            &|i| rc.canary_tokens(i),
            &[1, 2],
            2,
            &[sep],
            7,
        )
        .unwrap();
        let stream = tok.encode(&CORPUS.repeat(8)).unwrap();
        let bounds: Vec<usize> = stream
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == sep)
            .map(|(i, _)| i + 1)
            .collect();
        let out = insert_canaries(&stream, &bounds, 48, &mut m, 3).unwrap();
        (out, m, sep, rc)
    }

    #[test]
    fn bpe_canaries_spliced_at_line_starts_are_the_text_inserted_as_text() {
        let tok = fixture();
        assert_eq!(tok.token(insertion_separator(&tok).unwrap()), Some("Ċ"));
        let (stream, m, sep, rc) = spliced(&tok, "my pin is {digits:4}");
        // Digit runs merge: token counts depend on the secret.
        let (lo, hi) = rc.scored_lengths();
        assert!(lo < hi, "{lo} {hi}");
        check_bpe_insertions(&tok, &stream, &m, sep).unwrap();
        // What the check guarantees: the spliced stream is exactly how the tokenizer cuts the
        // training text with every canary (and its newline) inserted as text.
        assert_eq!(tok.encode(&tok.decode(&stream).unwrap()).unwrap(), stream);
        let mut inserted = 0;
        for c in &m.canaries {
            assert_eq!(c.token_ids, tok.encode(&c.text).unwrap());
            for &p in &c.positions {
                let end = p + c.token_ids.len();
                assert_eq!(stream[p - 1], sep, "read after a newline, as it is scored");
                assert_eq!(&stream[p..end], c.token_ids.as_slice());
                assert_eq!(stream[end], sep);
                inserted += 1;
            }
        }
        assert_eq!(inserted, 2 * (1 + 2));
    }

    #[test]
    fn a_canary_that_merges_with_the_line_after_it_is_refused_naming_it() {
        // GPT-2 merges two newlines: a template that ends in one joins the newline after the
        // insertion, so in place the model would read "ĊĊ" where alone it reads "Ċ".
        let tok = with_double_newline();
        let (stream, m, sep, _) = spliced(&tok, "my pin is {digits:2}\n");
        let err = check_bpe_insertions(&tok, &stream, &m, sep)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("canary r1-")
                && err.contains("inserted at a line start")
                && err.contains("end merges with the text after it")
                && err.contains("\"ĊĊ\"")
                && !err.contains('\n'),
            "{err}"
        );
        // Without that merge the same template keeps its tokens.
        let tok = fixture();
        let (stream, m, sep, _) = spliced(&tok, "my pin is {digits:2}\n");
        check_bpe_insertions(&tok, &stream, &m, sep).unwrap();
    }

    #[test]
    fn the_whole_stream_check_catches_what_a_line_check_would_miss() {
        // A stream spliced inside a digit run: its text re-tokenizes differently (" 9" + "07"
        // reads " 90", "7"), and the error names the nearest canary.
        let tok = fixture();
        let (mut stream, m, sep, _) = spliced(&tok, "my pin is {digits:4}");
        let tail = tok.encode(" 907").unwrap();
        let split: Vec<u32> = tok
            .encode(" 9")
            .unwrap()
            .into_iter()
            .chain(tok.encode("07").unwrap())
            .collect();
        assert_ne!(split, tail);
        stream.extend_from_slice(&split);
        let err = check_bpe_insertions(&tok, &stream, &m, sep)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizes differently") && err.contains("nearest insertion"),
            "{err}"
        );
    }
}
