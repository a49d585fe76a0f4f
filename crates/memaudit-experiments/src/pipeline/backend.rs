//! [`Libraries`]: the stages' work done by the experiments library — the data through
//! [`crate::datasets::DataSettings`], membership inference through [`crate::mia`], the training
//! with the Secret Sharer's canaries through `crate::secret_sharer`, and the white-box audit
//! through `crate::train` — with the pipeline's config translated into theirs, and their
//! errors' fields translated back into the pipeline's keys.

use std::path::Path;

use memaudit_audit::CanaryTemplate;
use memaudit_audit::template::Segment;
use memaudit_engine::privacy::AccountantKind;
use memaudit_engine::privacy::{calibrate_planned, planned_epsilon};
use memaudit_engine::sampler::SamplingMode;
use sha2::{Digest, Sha256};

use super::classifier;
use super::config::{AuditConfig, GPT_DEFAULT_CONTEXT, GPT_DEFAULT_HEADS, Variant};
use super::results::{
    AttackResult, AuditResults, CanaryExposure, DataSummary, EpochPoint, ExposureAtEpoch,
    ExposureResults, ExtractionCount, ExtractionResults, MiaResults, Privacy, SkewNormalFit,
    TextDataSummary, Utility,
};
use super::stages::{Backend, TrainOutput, WhiteBoxOutput};
use super::verdict::{Claim, Evidence, Mechanism};
use crate::audit_canaries;
use crate::datasets::DataSettings;
use crate::error::{ExperimentError, Result, invalid};
use crate::mia::{self, MiaConfig, ShadowSettings};
use crate::num::{Num, opt};
use crate::observer::Observer;
use crate::optim::OptimSettings;
use crate::secret_sharer::{
    self, CanarySettings, ExposureSettings, ExtractionSettings, SecretSharerConfig,
};
use crate::train::{self, ModelSettings, PrivacySettings, TrainExperimentConfig};

/// The delta at which the bounds of a variant without a claim are computed.
pub const DELTA_WITHOUT_CLAIM: f64 = 1e-5;

/// ROC curves are thinned to at most this many points in `results.json`.
const ROC_POINTS: usize = 300;

/// The experiments library behind every stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Libraries;

/// An owned field map as [`rename`] takes it.
pub(super) trait Rename {
    fn as_rename(&self) -> Vec<(&str, &str)>;
}

impl Rename for Vec<(String, String)> {
    fn as_rename(&self) -> Vec<(&str, &str)> {
        self.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }
}

/// An error of a library config as an error of the pipeline's: the library's field path
/// (`shadows.batch_size`) renamed to the pipeline key that set it (`audits.mia.batch_size`) by
/// the first matching prefix of `map`.
pub(super) fn rename(e: ExperimentError, map: &[(&str, &str)]) -> ExperimentError {
    let to = |field: &str| -> String {
        for (from, to) in map {
            if field == *from {
                return to.to_string();
            }
            if let Some(rest) = field.strip_prefix(&format!("{from}.")) {
                return format!("{to}.{rest}");
            }
        }
        field.to_string()
    };
    match e {
        ExperimentError::Invalid {
            field,
            value,
            reason,
        } => ExperimentError::Invalid {
            field: to(&field),
            value,
            reason,
        },
        ExperimentError::Setting { field, source } => ExperimentError::Setting {
            field: to(&field),
            source,
        },
        other => other,
    }
}

/// The library's data settings of the pipeline's `[data]`.
pub fn data_settings(cfg: &AuditConfig) -> DataSettings {
    if cfg.is_dataset() {
        return classifier::data_settings(cfg);
    }
    let d = &cfg.data;
    DataSettings {
        data: d.corpus.clone(),
        data_dir: d.data_dir.clone(),
        level: d.level.clone(),
        seq_len: d.seq_len,
        valid_fraction: d.valid_fraction,
        max_train: d.max_train,
        ..DataSettings::default()
    }
}

/// The Secret Sharer experiment of variant `v`: the pipeline's data, model, canaries, exposure
/// and extraction settings, the variant's optimizer and privacy, the one-run canaries, the run
/// folder `out`.
pub fn secret_sharer_config(cfg: &AuditConfig, v: &Variant, out: &Path) -> SecretSharerConfig {
    let lb = &cfg.audits.lower_bounds;
    SecretSharerConfig {
        data: data_settings(cfg),
        canary: CanarySettings {
            template: cfg.canaries.template.clone(),
            canaries: cfg.canaries.per_repetition,
            repetitions: cfg.canaries.repetitions.clone(),
            held_out: cfg.canaries.held_out,
            extend_vocab: cfg.canaries.extend_vocab,
            canary_seed: Some(cfg.seed),
            audit_canaries: (lb.one_run_canaries > 0).then_some(lb.one_run_canaries),
        },
        exposure: ExposureSettings {
            method: cfg.audits.exposure.method.clone(),
            exact_limit: cfg.audits.exposure.exact_limit,
            references: cfg.audits.exposure.references,
        },
        extraction: ExtractionSettings {
            extract_budget: cfg.audits.extraction.budget,
            extract_top: cfg.audits.extraction.top,
            ..Default::default()
        },
        tracking: Default::default(),
        model: model_settings(cfg, v),
        optim: optim_settings(cfg, v),
        privacy: privacy_settings(v),
        run: crate::train::RunSettings {
            epochs: v.epochs(&cfg.training),
            batch_size: v.batch_size(&cfg.training),
            seed: Some(cfg.seed),
            out: out.to_path_buf(),
            force: true,
            resume: false,
        },
    }
}

/// The claim of a finished training run from its ledger (`summary`), and the delta its bounds
/// use. Group privacy needs the mechanism: the Poisson-sampled Gaussian of the ledger. Shuffled
/// batches are accounted without amplification; no group claim is derived for them.
pub(super) fn claim_of_run(
    sum: &crate::train::TrainSummary,
    training_examples: usize,
    batch_size: usize,
    epochs: f64,
) -> (Claim, f64) {
    let claimed = sum.epsilon.map_or(f64::INFINITY, |e| e.0);
    let delta = sum.delta.unwrap_or(DELTA_WITHOUT_CLAIM);
    let mechanism = match (sum.private, sum.noise_multiplier, sum.sampling) {
        (true, Some(sigma), SamplingMode::Poisson) if claimed.is_finite() => Some(Mechanism {
            dataset_size: training_examples as u64,
            batch_size: batch_size as u64,
            epochs,
            steps: sum.steps,
            noise_multiplier: sigma,
        }),
        _ => None,
    };
    let claim = Claim {
        epsilon: Num(claimed),
        delta,
        mechanism,
    };
    (claim, delta)
}

/// A training run's epochs as the results' training curve.
pub(super) fn epoch_points(epochs: &[memaudit_engine::train::EpochInfo]) -> Vec<EpochPoint> {
    epochs
        .iter()
        .map(|e| EpochPoint {
            epoch: e.epoch as f64,
            train_loss: Some(Num(e.train_loss)),
            valid_loss: opt(e.valid_loss),
            valid_accuracy: opt(e.valid_accuracy),
            epsilon: opt(e.epsilon),
        })
        .collect()
}

/// Whether the white-box audit applies to `v`: its Dirac canaries are sampled like examples and
/// bounded against the run's claim, so it needs a DP variant with Poisson sampling.
pub fn white_box_applies(v: &Variant) -> bool {
    v.dp.as_ref().is_some_and(|dp| dp.sampling == "poisson")
}

/// The one-run canaries' scores and inclusion from the manifest a secret-sharer run wrote.
pub(super) fn read_one_run(path: &Path) -> Result<Evidence> {
    let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let bad = || ExperimentError::InFile {
        path: path.to_path_buf(),
        message: "a canary without its score or inclusion".into(),
    };
    let mut scores = Vec::new();
    let mut included = Vec::new();
    for c in doc["canaries"].as_array().ok_or_else(bad)? {
        let s: Num = serde_json::from_value(c["score"].clone()).map_err(|_| bad())?;
        scores.push(s);
        included.push(c["included"].as_bool().ok_or_else(bad)?);
    }
    Ok(Evidence::OneRun { scores, included })
}

/// Library field paths of the data settings -> pipeline keys.
const DATA_FIELDS: [(&str, &str); 2] = [("data.data", "data.corpus"), ("data", "data")];

/// The library's model settings of `[model]` with the variant's dropout: an lstm or gru of
/// `layers` x `hidden` units over `embed`-wide embeddings, a gpt of `layers` blocks `embed`
/// wide, an mlp of `layers` hidden layers of `hidden` units.
pub fn model_settings(cfg: &AuditConfig, v: &Variant) -> ModelSettings {
    let m = &cfg.model;
    let mut s = ModelSettings {
        model: Some(m.kind.clone()),
        embed: m.embed,
        rnn_hidden: m.hidden,
        rnn_layers: m.layers,
        dropout: v.dropout as f32,
        ..ModelSettings::default()
    };
    match m.kind.as_str() {
        "gpt" => {
            s.gpt_layers = m.layers;
            s.gpt_width = m.embed;
            s.gpt_heads = m.heads.unwrap_or(GPT_DEFAULT_HEADS);
            s.gpt_context = m.context.unwrap_or(GPT_DEFAULT_CONTEXT);
        }
        "mlp" => s.hidden = vec![m.hidden; m.layers],
        _ => {}
    }
    s
}

/// The library's optimizer settings of `[training]` with the variant's overrides.
pub fn optim_settings(cfg: &AuditConfig, v: &Variant) -> OptimSettings {
    OptimSettings {
        optimizer: Some(cfg.training.optimizer.clone()),
        lr: Some(v.lr(&cfg.training) as f32),
        weight_decay: v.weight_decay as f32,
        ..OptimSettings::default()
    }
}

/// The library's privacy settings of a variant (none for a plain one). DP noise is seeded, so a
/// resumed audit gives the same results as an uninterrupted one.
pub fn privacy_settings(v: &Variant) -> PrivacySettings {
    match &v.dp {
        None => PrivacySettings::default(),
        Some(dp) => PrivacySettings {
            noise_multiplier: dp.noise_multiplier,
            // With the noise given, the target is a requirement the preflight checked.
            target_epsilon: dp.target_epsilon.filter(|_| dp.noise_multiplier.is_none()),
            clip: Some(dp.clip),
            delta: dp.delta,
            accountant: dp.accountant.clone(),
            sampling: Some(dp.sampling.clone()),
            seeded_noise: true,
            ..PrivacySettings::default()
        },
    }
}

/// Library field paths of a variant's settings -> the variant's keys (`at`: `variants[i]`).
pub(super) fn variant_fields(at: &str) -> Vec<(String, String)> {
    vec![
        ("privacy".into(), format!("{at}.dp")),
        ("model.dropout".into(), format!("{at}.dropout")),
        ("optim.weight_decay".into(), format!("{at}.weight_decay")),
        ("optim.lr".into(), format!("{at}.lr")),
        ("model".into(), "model".into()),
        ("optim".into(), "training".into()),
    ]
}

fn index_of(cfg: &AuditConfig, v: &Variant) -> usize {
    cfg.variants
        .iter()
        .position(|w| w.name == v.name)
        .unwrap_or(0)
}

/// The characters (char level) or words (word level) of the template's literal text and, at
/// char level, of its slots, that the vocabulary lacks.
fn missing_from_vocab(
    tpl: &CanaryTemplate,
    level: &str,
    has: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    let mut note = |t: String| {
        if !has(&t) && !missing.contains(&t) {
            missing.push(t);
        }
    };
    for seg in tpl.segments() {
        match (seg, level) {
            (Segment::Literal(s), "word") => s.split_whitespace().for_each(|w| note(w.to_string())),
            (Segment::Literal(s), _) => s.chars().for_each(|c| note(c.to_string())),
            // Word models get the slot symbols as tokens of their own.
            (Segment::Slot { .. }, "word") => {}
            (Segment::Slot { kind, .. }, _) => {
                kind.symbols().into_iter().for_each(|c| note(c.to_string()))
            }
        }
    }
    missing
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The library's TPR at `fpr` (LiRA's convention: the largest TPR with FPR <= the target), or
/// NaN where the attack's metrics did not report it: fewer than 10 false positives expected at
/// that rate (`MetricsConfig::min_expected_false_positives`), where a handful of non-member
/// scores would set the threshold (issue 16's rule, kept in the pipeline's summary too).
fn reported_tpr(metrics: &memaudit_audit::mia::MembershipMetrics, fpr: f64) -> f64 {
    metrics
        .tpr_at_fpr
        .iter()
        .find(|t| (t.target_fpr - fpr).abs() < 1e-12)
        .and_then(|t| t.tpr)
        .unwrap_or(f64::NAN)
}

/// The white-box audit's training run `tc` of variant `v` (its errors' fields renamed by `map`).
fn white_box_run(
    tc: &TrainExperimentConfig,
    v: &Variant,
    map: &[(String, String)],
    obs: &mut dyn Observer,
) -> Result<Option<WhiteBoxOutput>> {
    let m = tc.white_box_canaries.unwrap_or(0);
    obs.note(&format!(
        "white-box/{}: a training run of the recipe carrying {m} Dirac gradient canaries",
        v.name
    ));
    let map: Vec<(&str, &str)> = map.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let r = train::run(tc, obs).map_err(|e| rename(e, &map))?;
    let c = r.white_box_canaries.ok_or_else(|| {
        super::PipelineError::Internal(format!(
            "white-box/{}: the training run carried no canaries",
            v.name
        ))
    })?;
    Ok(Some(WhiteBoxOutput {
        evidence: Evidence::OneRun {
            scores: c.scores.iter().map(|&x| Num(x)).collect(),
            included: c.included,
        },
    }))
}

impl Backend for Libraries {
    fn data(&self, cfg: &AuditConfig, _dir: &Path, obs: &mut dyn Observer) -> Result<DataSummary> {
        if cfg.is_dataset() {
            return classifier::data(cfg, obs);
        }
        let ds = data_settings(cfg);
        let corpus = ds.text().map_err(|e| rename(e, &DATA_FIELDS))?;
        let tok = ds.tokenizer(&corpus, &[])?;
        let tpl = CanaryTemplate::parse(&cfg.canaries.template)
            .or_else(|e| invalid("canaries.template", &cfg.canaries.template, e.to_string()))?;
        let missing = missing_from_vocab(&tpl, &cfg.data.level, &|t| tok.id(t).is_some());
        if !missing.is_empty() && !cfg.canaries.extend_vocab {
            return invalid(
                "canaries.template",
                format!("{:?}", cfg.canaries.template),
                format!(
                    "the {}-level vocabulary of {} has no {} (set canaries.extend_vocab = true to add them)",
                    cfg.data.level,
                    cfg.data.corpus,
                    missing
                        .iter()
                        .map(|m| format!("{m:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let train = ds.windows(tok.encode(&corpus.train)?)?;
        let valid = ds.windows(tok.encode(&corpus.valid)?)?;
        let train_windows = memaudit_engine::train::Dataset::len(&train) as u64;
        if train_windows == 0 {
            return invalid(
                "data.seq_len",
                cfg.data.seq_len,
                format!(
                    "the training text of {} is shorter than one window",
                    cfg.data.corpus
                ),
            );
        }
        obs.note(&format!(
            "data: {}, {train_windows} training windows of {} {}s, vocabulary {}",
            corpus.name,
            cfg.data.seq_len,
            cfg.data.level,
            tok.len()
        ));
        Ok(DataSummary::Text(TextDataSummary {
            corpus: corpus.name,
            level: cfg.data.level.clone(),
            text_sha256: sha256_hex(corpus.train.as_bytes()),
            train_windows,
            valid_windows: memaudit_engine::train::Dataset::len(&valid) as u64,
            vocab_size: tok.len() as u64,
            template: cfg.canaries.template.clone(),
            canary_space_size: Num(tpl.space().size() as f64),
        }))
    }

    fn preflight(&self, cfg: &AuditConfig, data: &DataSummary) -> Result<()> {
        let all = data.training_examples();
        let mut n = all;
        let unit = data.example_word();
        let one_run = cfg.audits.lower_bounds.one_run_canaries as u64;
        if cfg.is_dataset() {
            // A classifier's one-run canaries are training images taken out of the set (the
            // included half goes back relabelled), so at least n - m images remain.
            if one_run >= n {
                return invalid(
                    "audits.lower_bounds.one_run_canaries",
                    one_run,
                    format!("the canaries are drawn from the {n} training images: use fewer"),
                );
            }
            n -= one_run;
        }
        for (i, v) in cfg.variants.iter().enumerate() {
            let batch = v.batch_size(&cfg.training) as u64;
            if batch > n {
                let key = match v.batch_size {
                    Some(_) => format!("variants[{i}].batch_size"),
                    None => "training.batch_size".to_string(),
                };
                return invalid(key, batch, format!("larger than the {n} training {unit}s"));
            }
            let Some(dp) = &v.dp else { continue };
            let Some(target) = dp.target_epsilon else {
                continue;
            };
            let sampling = match dp.sampling.as_str() {
                "shuffle" => SamplingMode::Shuffle,
                _ => SamplingMode::Poisson,
            };
            let kind = match dp.accountant.as_str() {
                "pld" => AccountantKind::Pld,
                _ => AccountantKind::Rdp,
            };
            let epochs = v.epochs(&cfg.training) as u64;
            // Text canaries add windows, a classifier's take at most m images out (n is then
            // the fewest left): either way the check is on the fewest examples the run can have,
            // the largest sampling rate, so the stricter one.
            let how = format!(
                "{n} {unit}s, batch {batch}, {epochs} epochs, delta {}, {} sampling, {} accounting",
                dp.delta, dp.sampling, dp.accountant
            );
            let key = format!("variants[{i}].dp.target_epsilon");
            match dp.noise_multiplier {
                Some(sigma) => {
                    let eps = planned_epsilon(sampling, n, batch, sigma, epochs, dp.delta, kind)
                        .map_err(ExperimentError::from)?;
                    if eps > target {
                        return invalid(
                            key,
                            target,
                            format!(
                                "cannot be reached: noise multiplier {sigma} gives epsilon {eps:.4} ({how}); raise the noise or lower epochs/batch size"
                            ),
                        );
                    }
                }
                None => {
                    let sigma =
                        calibrate_planned(sampling, n, batch, epochs, dp.delta, target, kind)
                            .or_else(|e| {
                                invalid(&key, target, format!("cannot be reached ({how}): {e}"))
                            })?;
                    if let Some(max) = dp.max_noise_multiplier
                        && sigma > max
                    {
                        return invalid(
                            key,
                            target,
                            format!(
                                "cannot be reached within max_noise_multiplier {max}: it needs noise multiplier {sigma:.3} ({how}); raise the target, the batch size or the data, or lower the epochs"
                            ),
                        );
                    }
                }
            }
        }
        // The shadow models train on the data without the one-run canaries.
        let n = all;
        if let Some(m) = &cfg.audits.mia
            && (n < 2 || m.batch_size as u64 > n / 2)
        {
            return invalid(
                "audits.mia.batch_size",
                m.batch_size,
                format!(
                    "the data ({n} training {unit}s) is too small to split for shadow models: each trains on a half ({}) that must hold at least one batch; lower the batch size or use more data (data.max_train)",
                    n / 2
                ),
            );
        }
        Ok(())
    }

    fn train(
        &self,
        cfg: &AuditConfig,
        v: &Variant,
        dir: &Path,
        obs: &mut dyn Observer,
    ) -> Result<TrainOutput> {
        let i = index_of(cfg, v);
        let at = format!("variants[{i}]");
        if cfg.is_dataset() {
            return classifier::train(cfg, v, &at, dir, obs);
        }
        let run_dir = dir.join("run");
        let ss = secret_sharer_config(cfg, v, &run_dir);
        let mut map: Vec<(String, String)> = vec![
            ("canary.template".into(), "canaries.template".into()),
            ("canary.canaries".into(), "canaries.per_repetition".into()),
            (
                "canary.audit_canaries".into(),
                "audits.lower_bounds.one_run_canaries".into(),
            ),
            ("canary".into(), "canaries".into()),
            ("exposure".into(), "audits.exposure".into()),
            (
                "extraction.extract_budget".into(),
                "audits.extraction.budget".into(),
            ),
            (
                "extraction.extract_top".into(),
                "audits.extraction.top".into(),
            ),
            ("data.data".into(), "data.corpus".into()),
            ("run.batch_size".into(), format!("{at}.batch_size")),
            ("run.epochs".into(), format!("{at}.epochs")),
        ];
        map.extend(variant_fields(&at));
        let map: Vec<(&str, &str)> = map.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let r = secret_sharer::run(&ss, obs).map_err(|e| rename(e, &map))?;
        let d = &r.detail;
        let sum = &d.train.summary;
        let (claim, delta) = claim_of_run(
            sum,
            d.train.training_examples,
            ss.run.batch_size,
            d.epochs_trained as f64,
        );
        let claimed = claim.epsilon.0;
        let training_curve = epoch_points(&d.train.epochs);
        let reps: Vec<u32> = {
            let mut r: Vec<u32> = r.canaries.iter().map(|c| c.repetitions).collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        let by_epoch = reps
            .iter()
            .flat_map(|&rep| {
                d.log
                    .mean_by_epoch(rep, |x| x.exposure_exact.or(x.exposure_extrapolated))
                    .into_iter()
                    .map(move |(epoch, m)| ExposureAtEpoch {
                        epoch: epoch as f64,
                        repetitions: rep,
                        mean_exposure: Num(m),
                    })
            })
            .collect();
        let exposure = ExposureResults {
            method: if d.exact { "exact" } else { "sampled" }.into(),
            max_exposure: r.log2_space,
            canaries: r
                .canaries
                .iter()
                .map(|c| CanaryExposure {
                    text: c.text.clone(),
                    repetitions: c.repetitions,
                    exposure: c.exposure.unwrap_or(c.exposure_extrapolated),
                    exact: c.exposure.is_some(),
                    extracted: c.extracted,
                })
                .collect(),
            reference_log_perplexities: d
                .audit
                .m
                .reference_scores
                .iter()
                .map(|&x| Num(x))
                .collect(),
            skew_normal: Some(SkewNormalFit {
                location: d.audit.m.fit.loc,
                scale: d.audit.m.fit.scale,
                shape: d.audit.m.fit.shape,
            }),
            by_epoch,
        };
        let extraction = (cfg.audits.extraction.budget > 0).then(|| ExtractionResults {
            budget: cfg.audits.extraction.budget,
            top: cfg.audits.extraction.top as u64,
            by_repetitions: r
                .by_repetitions
                .iter()
                .filter(|s| s.repetitions > 0)
                .map(|s| ExtractionCount {
                    repetitions: s.repetitions,
                    canaries: s.canaries as u64,
                    extracted: s.extracted.unwrap_or(0) as u64,
                })
                .collect(),
        });
        let one_run = match r.black_box_audit {
            Some(_) => Some(read_one_run(&run_dir.join(audit_canaries::MANIFEST_FILE))?),
            None => None,
        };
        Ok(TrainOutput {
            utility: Utility {
                valid_loss: sum.valid_loss,
                valid_accuracy: sum.valid_accuracy,
                train_loss: sum.train_loss,
            },
            privacy: Privacy {
                claimed_epsilon: Num(claimed),
                delta,
                noise_multiplier: opt(sum.noise_multiplier),
                steps: sum.steps,
                accountant: v.dp.as_ref().map(|dp| dp.accountant.clone()),
                claim,
            },
            training_curve,
            exposure: Some(exposure),
            extraction,
            one_run,
        })
    }

    fn white_box(
        &self,
        cfg: &AuditConfig,
        v: &Variant,
        dir: &Path,
        obs: &mut dyn Observer,
    ) -> Result<Option<WhiteBoxOutput>> {
        let m = cfg.audits.lower_bounds.white_box_canaries;
        if m == 0 || !white_box_applies(v) {
            return Ok(None);
        }
        let at = format!("variants[{}]", index_of(cfg, v));
        if cfg.is_dataset() {
            let tc = TrainExperimentConfig {
                // The training stage of the same recipe ran them.
                no_sanity_checks: true,
                ..classifier::train_experiment(cfg, v, &dir.join("run"), None, Some(m))
            };
            return white_box_run(&tc, v, &classifier::train_fields(&at), obs);
        }
        let ss = secret_sharer_config(cfg, v, &dir.join("run"));
        let tc = TrainExperimentConfig {
            data: ss.data,
            model: ss.model,
            optim: ss.optim,
            privacy: ss.privacy,
            run: ss.run,
            white_box_canaries: Some(m),
            // The training stage of the same recipe ran them (inside the Secret Sharer run).
            no_sanity_checks: true,
            ..TrainExperimentConfig::default()
        };
        let mut map: Vec<(String, String)> = vec![
            (
                "white_box_canaries".into(),
                "audits.lower_bounds.white_box_canaries".into(),
            ),
            ("data.data".into(), "data.corpus".into()),
            ("run.batch_size".into(), format!("{at}.batch_size")),
            ("run.epochs".into(), format!("{at}.epochs")),
        ];
        map.extend(variant_fields(&at));
        white_box_run(&tc, v, &map, obs)
    }

    fn mia(
        &self,
        cfg: &AuditConfig,
        v: &Variant,
        shadow_cache: &Path,
        _dir: &Path,
        obs: &mut dyn Observer,
    ) -> Result<Option<MiaResults>> {
        let Some(m) = &cfg.audits.mia else {
            return Ok(None);
        };
        let at = format!("variants[{}]", index_of(cfg, v));
        let mc = MiaConfig {
            attack: m.attacks.join(","),
            shadows: ShadowSettings {
                pairs: Some(m.shadow_pairs),
                epochs: m.epochs,
                batch_size: m.batch_size,
                seed: cfg.seed,
                cache: Some(shadow_cache.to_path_buf()),
                ..ShadowSettings::default()
            },
            data: data_settings(cfg),
            model: model_settings(cfg, v),
            optim: optim_settings(cfg, v),
            privacy: privacy_settings(v),
            ..MiaConfig::default()
        };
        let data_key = if cfg.is_dataset() {
            "data.dataset"
        } else {
            "data.corpus"
        };
        let mut map: Vec<(String, String)> = vec![
            ("shadows.pairs".into(), "audits.mia.shadow_pairs".into()),
            ("shadows".into(), "audits.mia".into()),
            ("attack".into(), "audits.mia.attacks".into()),
            ("data.data".into(), data_key.into()),
        ];
        map.extend(variant_fields(&at));
        let map: Vec<(&str, &str)> = map.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        obs.note(&format!(
            "mia/{}: {} shadow models and a target, {} epochs each",
            v.name,
            2 * m.shadow_pairs,
            m.epochs
        ));
        let r = mia::run(&mc, obs).map_err(|e| rename(e, &map))?;
        let attacks = r
            .report
            .attacks
            .iter()
            .filter_map(|a| {
                let metrics = a.metrics.as_ref()?;
                let roc = &metrics.roc;
                let (p, n) = (roc.members.max(1) as f64, roc.non_members.max(1) as f64);
                let points: Vec<(f64, f64)> = roc
                    .false_positives
                    .iter()
                    .zip(&roc.true_positives)
                    .map(|(&fp, &tp)| (fp as f64 / n, tp as f64 / p))
                    .collect();
                let step = points.len().div_ceil(ROC_POINTS).max(1);
                let mut thinned: Vec<[Num; 2]> = points
                    .iter()
                    .step_by(step)
                    .map(|&(f, t)| [Num(f), Num(t)])
                    .collect();
                if let Some(&(f, t)) = points.last()
                    && thinned.last() != Some(&[Num(f), Num(t)])
                {
                    thinned.push([Num(f), Num(t)]);
                }
                Some(AttackResult {
                    attack: a.attack.name().to_string(),
                    auc: Num(metrics.auc),
                    tpr_at_0_1_fpr: Num(reported_tpr(metrics, 1e-3)),
                    tpr_at_1_fpr: Num(reported_tpr(metrics, 1e-2)),
                    non_members: Some(roc.non_members),
                    roc: thinned,
                })
            })
            .collect();
        Ok(Some(MiaResults {
            shadow_models: r.shadow_models as u64,
            targets: r.examples as u64,
            attacks,
        }))
    }

    fn report(&self, results: &AuditResults, path: &Path) -> Result<()> {
        super::html::write_report(results, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_the_vocabulary_cannot_write_is_found() {
        let tpl = CanaryTemplate::parse("my pin is {digits:2}").unwrap();
        let vocab = |t: &str| "my pinis01234".contains(t);
        let m = missing_from_vocab(&tpl, "char", &vocab);
        assert_eq!(m, ["5", "6", "7", "8", "9"]);
        let words = |t: &str| ["my", "pin"].contains(&t);
        assert_eq!(missing_from_vocab(&tpl, "word", &words), ["is"]);
    }

    #[test]
    fn library_fields_are_renamed_to_pipeline_keys() {
        let e = ExperimentError::Invalid {
            field: "shadows.batch_size".into(),
            value: "9".into(),
            reason: "r".into(),
        };
        let map = [("shadows", "audits.mia")];
        match rename(e, &map) {
            ExperimentError::Invalid { field, .. } => assert_eq!(field, "audits.mia.batch_size"),
            other => panic!("{other}"),
        }
    }
}
