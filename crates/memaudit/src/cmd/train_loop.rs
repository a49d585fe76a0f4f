//! Training a trainer that a command built itself (`attack`, not yet migrated to
//! `memaudit-experiments`): the library trains it into the run folder
//! (`memaudit_experiments::train::train_in_folder`), this module renders the report. Kept apart
//! from `train.rs`, whose command is migrated and computes nothing (tests/thin_cli.rs).

use anyhow::Result;
use memaudit_engine::train::{EpochInfo, Trainer};
use memaudit_experiments::train::folder::EpochHook;
use memaudit_experiments::train::train_in_folder;

use super::experiment::CliObserver;
use super::train::{Prepared, render_training};
use crate::Ctx;
use crate::rundir::RunDir;

/// What `train_with_report` returns: the epochs' numbers (the whole history on a resume).
pub struct TrainOutcome {
    pub epochs: Vec<EpochInfo>,
}

/// Train into the run folder (the library's `train_in_folder`), write report.html and mark the
/// run completed; `extra` runs after each epoch. For the commands that build their own trainer
/// (`attack`).
pub fn train_with_report<'a>(
    ctx: &Ctx,
    rd: &mut RunDir,
    trainer: &mut Trainer,
    prepared: &Prepared,
    n: usize,
    extra: Option<EpochHook<'a>>,
    title: &str,
) -> Result<TrainOutcome> {
    debug_assert_eq!(prepared.train.len(), n);
    install_crash_test_hook(trainer)?;
    let mut observer = CliObserver::new("train", ctx);
    let run = train_in_folder(
        rd,
        trainer,
        prepared.train.as_ref(),
        prepared.valid.as_deref(),
        &prepared.name,
        memaudit_experiments::train::TrainHooks {
            epoch: extra,
            step: None,
            logs: None,
        },
        &mut observer,
    )?;
    observer.finish();
    drop(observer);
    render_training(&run, title)?
        .html
        .write(&rd.file("report.html"))?;
    rd.finish("completed")?;
    Ok(TrainOutcome { epochs: run.epochs })
}

/// Crash tests only (see `secret_sharer::crash_test_hook`): abort half way through the n-th
/// checkpoint.
pub fn install_crash_test_hook(trainer: &mut Trainer) -> Result<()> {
    if let Some(h) = super::secret_sharer::crash_test_hook()? {
        trainer.set_checkpoint_midway_hook(h);
    }
    Ok(())
}
