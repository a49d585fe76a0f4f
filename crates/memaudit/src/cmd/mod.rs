//! One module per subcommand.

pub mod args;
pub mod attack;
pub mod bench;
pub mod bench_accounting;
pub mod bench_engine;
pub mod bench_exposure;
pub mod bench_mia;
pub mod data;
pub mod demo;
pub mod dp_sweep;
pub mod dynamics;
pub mod epsilon;
pub mod eval;
pub mod export;
pub mod exposure;
pub mod extract;
pub mod import;
pub mod lower_bound;
pub mod mia;
pub mod noise;
pub mod sample;
pub mod sanity;
pub mod secret_sharer;
pub mod statement;
pub mod train;
