//! `memaudit merge DIR`: combine the finished shards in DIR (written by `--shard I/N` runs of
//! `exposure` or `mia`) into the job's result. Refuses a folder with missing shards (naming
//! their indices) or with shards of different jobs, configs or versions.

use std::path::PathBuf;

use anyhow::Result;
use memaudit_engine::shard;

use crate::Ctx;
use crate::error::user;
use crate::output::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shard folder (the --shard-dir of the shard runs).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Also write the merged result as JSON to this file (atomically).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    let shards = shard::scan(&args.dir).map_err(|e| user(e.to_string()))?;
    let job = shards[0].header.job.clone();
    ctx.note(format!(
        "merging {} shards of job {} (key {})",
        shards.len(),
        job,
        shards[0].header.key
    ));
    let report = match job.as_str() {
        super::exposure_shard::JOB => super::exposure_shard::merge(&shards)?,
        super::mia_shard::JOB => super::mia_shard::merge(&shards, ctx)?,
        other => {
            return Err(user(format!(
                "{}: shards of job {other:?}, which this memaudit cannot merge",
                args.dir.display()
            )));
        }
    };
    if let Some(out) = &args.out {
        let tmp = out.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&report.json).expect("JSON serialises");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, out))
            .map_err(|e| user(format!("--out {}: {e}", out.display())))?;
    }
    Ok(report)
}
