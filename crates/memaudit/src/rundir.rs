//! Run folders (`run.json`, `metrics.csv`, checkpoints, `report.html`): the folder logic is
//! training state and lives in `memaudit_experiments::rundir`; errors there name the config
//! field (`run.out`), which the CLI reports as its flag (`--out`).

pub use memaudit_experiments::rundir::*;
