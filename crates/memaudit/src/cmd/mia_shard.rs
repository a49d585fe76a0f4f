//! `memaudit mia --data ... --pairs P --shard I/N` (or `--shards N` in an array task): shard I
//! trains its share of the shadow models into the shared cache, by model pair, and records them
//! in a shard unit; `memaudit merge DIR` then checks that every shard finished and runs the
//! attack with every model found in the cache (nothing is retrained). The work items are the P
//! pairs plus the target model; shard I owns items `[(P+1)*I/N, (P+1)*(I+1)/N)`, so its work is
//! a pure function of (plan, I, N) (`ShadowPlan::models_of_shard`). Each model is its own atomic unit in the cache, keyed by
//! everything that changes it; DP shadows use seeded noise, so a rerun reproduces them.

use anyhow::Result;
use md5::{Digest, Md5};
use memaudit_engine::shard::FinishedShard;
use serde::{Deserialize, Serialize};

use crate::error::user;
use crate::output::Report;

/// The job kind in shard headers.
pub const JOB: &str = "mia-shadows";

/// The job key: the cache keys of every model of the plan (they cover data, pairs, model,
/// optimiser, epochs, seed and privacy settings) and the attack command.
pub fn job_key(model_keys: &[String], argv: &[String]) -> String {
    let mut h = Md5::new();
    h.update(b"memaudit mia shadow shard v1\0");
    for k in model_keys {
        h.update(k.as_bytes());
        h.update(b"\0");
    }
    for a in argv {
        h.update(a.as_bytes());
        h.update(b"\0");
    }
    format!("{:x}", h.finalize())
}

/// What a shadow shard records.
#[derive(Serialize, Deserialize)]
pub struct MiaShardPayload {
    /// The `mia` command line without shard, output-format and job flags; the merge runs it.
    pub argv: Vec<String>,
    /// The working folder it ran in (relative paths in argv resolve there).
    pub cwd: String,
    pub cache: String,
    /// (model index, cache key) of the models this shard trained or found.
    pub models: Vec<(usize, String)>,
    pub seconds: f64,
}

/// This process's command line without the flags that select a shard, emit jobs or format the
/// output (and their values), for the merge to rerun and for job files to run.
pub fn argv_without_shard_flags() -> Vec<String> {
    const WITH_VALUE: [&str; 14] = [
        "--shard",
        "--shards",
        "--shard-dir",
        "--emit",
        "--emit-dir",
        "--throttle",
        "--cpus-per-task",
        "--mem",
        "--time",
        "--partition",
        "--image",
        "--pvc",
        "--mount",
        "--binary",
    ];
    const ALONE: [&str; 2] = ["--json", "--quiet"];
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let name = a.split('=').next().unwrap_or("");
        if WITH_VALUE.contains(&name) {
            if !a.contains('=') {
                args.next();
            }
            continue;
        }
        if ALONE.contains(&a.as_str()) {
            continue;
        }
        out.push(a);
    }
    out
}

/// Merge: every shard finished (checked by the scan), so every model is in the cache; run the
/// recorded `mia` command, which reuses them all and attacks.
pub fn merge(shards: &[FinishedShard], ctx: &crate::Ctx) -> Result<Report> {
    let p: MiaShardPayload = serde_json::from_value(shards[0].payload.clone())
        .map_err(|e| user(format!("shard 0: not a shadow-model shard: {e}")))?;
    let models: usize = shards
        .iter()
        .map(|s| s.payload["models"].as_array().map_or(0, |m| m.len()))
        .sum();
    ctx.note(format!(
        "{} shards trained {models} models into {}; attacking with all of them",
        shards.len(),
        p.cache
    ));
    std::env::set_current_dir(&p.cwd)
        .map_err(|e| user(format!("the shards ran in {}: {e}", p.cwd)))?;
    let mut argv = vec!["memaudit".to_string()];
    if ctx.quiet {
        argv.push("--quiet".into());
    }
    argv.extend(p.argv.iter().cloned());
    let cli = crate::parse_cli(&argv)
        .map_err(|e| user(format!("the recorded mia command no longer parses: {e}")))?;
    crate::run(cli)
}

/// `--emit slurm|k8s` on `mia --pairs P`: job files whose tasks run this command as shards.
pub fn emit_jobs(args: &super::mia::Args) -> Result<Report> {
    let dir = args.scale.dir()?.to_path_buf();
    let (_, note) = super::scale::emit(
        &args.scale,
        &super::scale::JobSpec {
            name: "mia",
            shard_args: argv_without_shard_flags(),
            merge_args: vec![],
            shard_dir: dir,
        },
    )?;
    Ok(Report::new(
        note.clone(),
        serde_json::json!({ "emitted": note }),
    ))
}

/// Train (or find) this shard's models into the cache and record them as a shard unit.
pub fn run_shard(
    args: &super::mia::Args,
    ctx: &crate::Ctx,
    job: &memaudit_experiments::mia::ShadowJob,
) -> Result<Report> {
    use memaudit_engine::shard::{self as units, ShardHeader};
    use memaudit_experiments::NullObserver;
    if args.shadows.only_model.is_some() {
        return Err(user(
            "--only-model and --shard/--shards exclude each other: a shard trains its pairs",
        ));
    }
    let (plan, cache) = (&job.plan, job.cache.as_path());
    let dir = args.scale.dir()?.to_path_buf();
    let shard = args.scale.resolve()?.expect("shard flags were given");
    let argv = argv_without_shard_flags();
    let keys: Vec<String> = (0..plan.models()).map(|i| plan.key(i)).collect();
    let header = ShardHeader {
        job: JOB.into(),
        key: job_key(&keys, &argv),
        version: env!("CARGO_PKG_VERSION").into(),
        shard,
    };
    if units::finished(&dir, &header).map_err(|e| user(e.to_string()))? {
        let note = format!(
            "shard {shard} of the shadow models is already finished in {}: skipped",
            dir.display()
        );
        ctx.note(&note);
        return Ok(Report::new(
            note,
            serde_json::json!({"shard": shard.to_string(), "skipped": true, "dir": dir.display().to_string()}),
        ));
    }
    let started = std::time::Instant::now();
    let mut models = Vec::new();
    for i in plan.models_of_shard(shard) {
        let m = job
            .train_model(i, &mut NullObserver)
            .map_err(|e| user(e.to_string()))?;
        ctx.note(format!(
            "shard {shard}: model {i} {} (key {})",
            if m.reused {
                "reused from the cache"
            } else {
                "trained"
            },
            m.key
        ));
        models.push((i, m.key));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cwd = std::env::current_dir().map_err(|e| user(format!("current folder: {e}")))?;
    let payload = MiaShardPayload {
        argv,
        cwd: cwd.display().to_string(),
        cache: cache.display().to_string(),
        models: models.clone(),
        seconds,
    };
    let unit = units::write(
        &dir,
        &header,
        serde_json::to_value(&payload).expect("payload serialises"),
        super::scale::fault_injection_before_commit,
    )
    .map_err(|e| user(e.to_string()))?;
    Ok(Report::new(
        format!(
            "shard {shard}: {} models ({}) in {seconds:.1}s; wrote {}",
            models.len(),
            models
                .iter()
                .map(|(i, _)| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            unit.display()
        ),
        serde_json::json!({
            "shard": shard.to_string(),
            "skipped": false,
            "unit": unit.display().to_string(),
            "models": models.iter().map(|(i, k)| serde_json::json!({"index": i, "key": k})).collect::<Vec<_>>(),
            "seconds": seconds,
        }),
    ))
}
