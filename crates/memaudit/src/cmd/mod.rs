//! One module per subcommand.

pub mod args;
pub mod bench;
pub mod bench_accounting;
pub mod bench_engine;
pub mod bench_exposure;
pub mod data;
pub mod demo;
pub mod dp_sweep;
pub mod dynamics;
pub mod epsilon;
pub mod eval;
pub mod exposure;
pub mod extract;
pub mod noise;
pub mod sample;
pub mod sanity;
pub mod secret_sharer;
pub mod statement;
pub mod train;

use crate::Ctx;
use crate::output::Report;

/// Placeholder for a subcommand whose issue has not landed: it says so and exits with code 2.
#[derive(clap::Args, Debug)]
pub struct Stub {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

impl Stub {
    pub fn run(&self, name: &str, _ctx: &Ctx) -> anyhow::Result<Report> {
        Err(crate::error::user(format!(
            "'memaudit {name}' is not yet implemented"
        )))
    }
}
