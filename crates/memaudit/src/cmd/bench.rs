//! `memaudit bench <what>`: benchmarks that check the speed and memory targets. Each prints
//! medians over repeats, side by side with its baseline where the baseline runs in-process, and
//! `--json` gives the numbers to the comparison scripts in `scripts/`.

use anyhow::Result;

use crate::Ctx;
use crate::output::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Engine step times (plain and with per-example clipping) and peak RSS.
    Engine(super::bench_engine::Args),
    /// DP-SGD step vs plain step on the engine's shapes, and peak RSS.
    Dp(super::bench_engine::Args),
    /// Accountant speed (RDP and PLD epsilon).
    Accounting(super::bench_accounting::Args),
    /// Exact exposure over 10^6 candidates by the trie walk.
    Exposure(super::bench_exposure::Args),
    /// A LiRA shadow set's wall time (training plus scoring), plain and DP-SGD.
    Mia(super::bench_mia::Args),
}

pub fn run(args: &Args, ctx: &Ctx) -> Result<Report> {
    match &args.what {
        What::Engine(a) => super::bench_engine::run_shapes(a, ctx, "bench engine"),
        What::Dp(a) => super::bench_engine::run_shapes(a, ctx, "bench dp"),
        What::Accounting(a) => super::bench_accounting::run(a, ctx),
        What::Exposure(a) => super::bench_exposure::run(a, ctx),
        What::Mia(a) => super::bench_mia::run(a, ctx),
    }
}
