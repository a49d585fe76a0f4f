//! `memaudit exposure --shard I/N` (or `--shards N` in an array task): one shard of the exact
//! exposure walk over all of R, written as an atomic unit; `memaudit merge` adds the shards into
//! exact ranks and exposures equal to a single-process run. `--emit slurm|k8s` writes the job
//! files instead. The walk's split is `Scorer::exact_ranks_shard` (memaudit-audit); the unit
//! format is `memaudit_engine::shard`.

use anyhow::Result;
use md5::{Digest, Md5};
use memaudit_audit::{RankShard, Scorer, merge_rank_shards};
use memaudit_engine::shard::{self, FinishedShard, ShardHeader};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::exposure::Args;
use super::sample::load_lm;
use super::scale::{JobSpec, absolute, emit};
use super::secret_sharer::CanarySet;
use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

/// The job kind in shard headers.
pub const JOB: &str = "exposure";

/// What one exposure shard stores besides the walk's counts: enough to render the merged
/// result without the run folder.
#[derive(Serialize, Deserialize)]
pub struct ExposurePayload {
    pub run: String,
    pub step: u64,
    pub template: String,
    pub log2_space: f64,
    pub canary_ids: Vec<String>,
    pub texts: Vec<String>,
    pub repetitions: Vec<u32>,
    pub threads: usize,
    pub seconds: f64,
    pub walk: RankShard,
}

/// The job key: everything the walk's result depends on. The model's parameters (bit
/// patterns), its config, the canary manifest (template, secrets, context) and the walk's
/// chunking; a shard of another model or manifest can never merge with these.
fn job_key(saved: &super::eval::SavedRun, set: &CanarySet, chunk_rows: usize) -> String {
    let mut h = Md5::new();
    h.update(b"memaudit exposure shard v1\0");
    h.update(serde_json::to_vec(&saved.config).unwrap_or_default());
    for p in &saved.checkpoint.params {
        h.update(p.to_bits().to_le_bytes());
    }
    h.update(serde_json::to_vec(&set.manifest).unwrap_or_default());
    h.update((chunk_rows as u64).to_le_bytes());
    format!("{:x}", h.finalize())
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let dir = args.scale.dir()?.to_path_buf();
    if args.scale.emit.is_some() {
        let mut shard_args = vec![
            "exposure".to_string(),
            "--run".into(),
            absolute(&args.run)?.display().to_string(),
            "--exposure".into(),
            "exact".into(),
            "--exact-limit".into(),
            args.exposure.exact_limit.to_string(),
        ];
        if let Some(m) = &args.manifest {
            shard_args.extend(["--manifest".into(), absolute(m)?.display().to_string()]);
        }
        let (_, note) = emit(
            &args.scale,
            &JobSpec {
                name: "exposure",
                shard_args,
                merge_args: vec![],
                shard_dir: dir,
            },
        )?;
        return Ok(Report::new(note.clone(), json!({ "emitted": note })));
    }
    let shard = args.scale.resolve()?.expect("shard flags were given");
    if args.exposure.method == "sampled" {
        return Err(user(
            "--exposure sampled: shards split the exact walk over all of R; sampled exposure needs no sharding",
        ));
    }
    let (saved, lm, tok) = load_lm(&args.run)?;
    let set = CanarySet::load(&args.run, args.manifest.as_deref(), &tok)?;
    let size = set.tpl.space().size();
    if size > args.exposure.exact_limit {
        return Err(user(format!(
            "--exact-limit {}: |R| = {size} is above it; raise --exact-limit to walk all of R in shards",
            args.exposure.exact_limit
        )));
    }
    // The same batching as the single-process walk (fewer rows for a transformer's KV cache).
    let opts = super::secret_sharer::walk_options(lm.as_ref());
    let header = ShardHeader {
        job: JOB.into(),
        key: job_key(&saved, &set, opts.chunk_rows),
        version: env!("CARGO_PKG_VERSION").into(),
        shard,
    };
    if shard::finished(&dir, &header).map_err(|e| user(e.to_string()))? {
        let note = format!(
            "shard {shard} of the exposure walk is already finished in {}: skipped",
            dir.display()
        );
        ctx.note(&note);
        return Ok(Report::new(
            note,
            json!({"shard": shard.to_string(), "skipped": true, "dir": dir.display().to_string()}),
        ));
    }
    let started = std::time::Instant::now();
    let tpl = set.tpl.trie().ok_or_else(|| {
        user("shards split the trie walk; a byte-level BPE run's exact exposure is one scoring of every candidate rendered whole: run `memaudit exposure` without the shard flags")
    })?;
    let scorer = Scorer::new(lm.as_ref(), tpl, opts).map_err(|e| user(e.to_string()))?;
    let secrets = set.secrets();
    let walk = scorer
        .exact_ranks_shard(
            &secrets,
            args.exposure.exact_limit,
            shard.index,
            shard.count,
        )
        .map_err(|e| user(e.to_string()))?;
    let seconds = started.elapsed().as_secs_f64();
    let leaves = walk.stats.leaves;
    let rows = walk.stats.lm_rows;
    let payload = ExposurePayload {
        run: args.run.display().to_string(),
        step: saved.checkpoint.state.step,
        template: set.manifest.template.clone(),
        log2_space: set.tpl.space().log2_size(),
        canary_ids: set.manifest.canaries.iter().map(|c| c.id.clone()).collect(),
        texts: set
            .manifest
            .canaries
            .iter()
            .map(|c| c.text.clone())
            .collect(),
        repetitions: set
            .manifest
            .canaries
            .iter()
            .map(|c| c.repetitions)
            .collect(),
        threads: rayon::current_num_threads(),
        seconds,
        walk,
    };
    let unit = shard::write(
        &dir,
        &header,
        serde_json::to_value(&payload).expect("payload serialises"),
        super::scale::fault_injection_before_commit,
    )
    .map_err(|e| user(e.to_string()))?;
    let text = format!(
        "shard {shard}: {leaves} candidates scored ({rows} LM rows) in {seconds:.1}s ({:.0} candidates/s); wrote {}",
        leaves as f64 / seconds.max(1e-9),
        unit.display()
    );
    Ok(Report::new(
        text,
        json!({
            "shard": shard.to_string(),
            "skipped": false,
            "unit": unit.display().to_string(),
            "leaves": leaves,
            "lm_rows": rows,
            "seconds": seconds,
        }),
    ))
}

/// Merge finished exposure shards (all present, one job) into exact ranks and exposures.
pub fn merge(shards: &[FinishedShard]) -> Result<Report> {
    let payloads: Vec<ExposurePayload> = shards
        .iter()
        .map(|s| {
            serde_json::from_value(s.payload.clone()).map_err(|e| {
                user(format!(
                    "shard {}: not an exposure shard result: {e}",
                    s.header.shard
                ))
            })
        })
        .collect::<Result<_>>()?;
    let first = &payloads[0];
    let walks: Vec<RankShard> = payloads.iter().map(|p| p.walk.clone()).collect();
    let ranks = merge_rank_shards(&walks, first.log2_space).map_err(|e| user(e.to_string()))?;
    let leaves: u64 = walks.iter().map(|w| w.stats.leaves).sum();
    let lm_rows: u64 = walks.iter().map(|w| w.stats.lm_rows).sum();
    let seconds: Vec<f64> = payloads.iter().map(|p| p.seconds).collect();
    let total: f64 = seconds.iter().sum();
    let slowest = seconds.iter().cloned().fold(0.0, f64::max);
    let n = shards.len();
    let mut text = format!(
        "exact exposure of {:?} (log2|R| = {:.2}) at step {}, merged from {n} shards ({leaves} candidates scored, {total:.1} shard-seconds, slowest shard {slowest:.1}s):\n",
        first.template, first.log2_space, first.step
    );
    text += "id          repetitions  log-perplexity  rank        exposure\n";
    let mut canaries = Vec::new();
    for (i, r) in ranks.iter().enumerate() {
        text += &format!(
            "{:<10}  {:>11}  {:>14.3}  {:>10}  {:>8.3}\n",
            first.canary_ids[i], first.repetitions[i], r.log_perplexity, r.rank, r.exposure
        );
        canaries.push(json!({
            "id": first.canary_ids[i],
            "repetitions": first.repetitions[i],
            "text": first.texts.get(i),
            "index": r.index as u64,
            "log_perplexity": num(r.log_perplexity),
            "rank": r.rank as u64,
            "exposure": num(r.exposure),
        }));
    }
    Ok(Report::new(
        text,
        json!({
            "job": JOB,
            "shards": n,
            "run": first.run,
            "step": first.step,
            "template": first.template,
            "log2_space": first.log2_space,
            "candidates_scored": leaves,
            "lm_rows": lm_rows,
            "shard_seconds": seconds,
            "canaries": canaries,
        }),
    ))
}
