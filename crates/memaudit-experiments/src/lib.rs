//! # memaudit-experiments: the experiments as a library
//!
//! Every memaudit experiment is here as a typed value: a serde config (defaults defined once, in
//! its `Default` impl; loadable from TOML or JSON; validated with errors that name the field), a
//! `run(config, observer)` that returns a typed, serialisable result, and nothing printed:
//! progress, notes and per-epoch metrics go through an [`Observer`]. The `memaudit` CLI turns its
//! flags into these configs, runs them, and renders text, JSON (the result serialised), run
//! folders and HTML; a Rust program, the Python package or a scheduler shard can run the same
//! experiment without the CLI.
//!
//! ## Why a crate of its own
//!
//! The experiments compose every algorithm crate: data loading (`memaudit-data`), training
//! (`memaudit-engine`), the audits and dynamics measurements (`memaudit-audit`) and
//! the attacks (`memaudit-attacks`). Putting them in one of those crates would make it depend on
//! its peers and on configuration-file parsing (toml), which the algorithms do not need. A
//! crate between the algorithm crates and the CLI keeps the algorithms' dependency graph as it
//! is and gives every front end (CLI, Python, scheduler) one dependency.
//!
//! ## Status (issue 13)
//!
//! Migrated: membership inference ([`mia`]: score files, or shadow models through the
//! resumable cache), the lower bounds from IN/OUT score files ([`lower_bound`]), the dynamics
//! studies `easy-hard`, `sensitivity`, `curves`, `capacity` and `regularizers` ([`dynamics`])
//! and the sanity checks before private training ([`sanity`]). Every training experiment
//! shares one family of settings: the data ([`datasets::DataSettings`]), the model, DP-SGD and
//! the run ([`train::ModelSettings`], [`train::PrivacySettings`], [`train::RunSettings`]) and
//! the optimizer ([`optim::OptimSettings`]), and one builder of the engine's `TrainConfig` from
//! them ([`train::train_config`]). The Secret Sharer ([`secret_sharer`]),
//! training into a run folder ([`train`], [`rundir`]) with the black-box audit a run carries
//! ([`audit_canaries`]), the named datasets ([`datasets`]), the exposure and extraction of a
//! saved run ([`exposure`], [`extract`], [`saved_run`]), the DP sweep ([`dp_sweep`]) and the
//! audit pipeline ([`pipeline`]), the malicious-training attacks of `memaudit attack`
//! ([`attacks`]) and the critical sample ratio of a saved run ([`dynamics::csr`]), and the
//! evaluation of and samples from a saved run ([`eval`], [`sample`]).
//!
//! [`registry`] names them all ([`registry::run_named`]: a config as JSON in, the result as
//! the CLI's `--json` out), for front ends that hold configs as data (the Python package).
//! Long loops poll [`Observer::cancelled`] at their safe points and return
//! [`ExperimentError::Cancelled`], with every atomic unit complete or absent.
//!
//! ## Example: a dynamics study from Rust
//!
//! Easy and hard examples (Arpit et al. 2017, §3.1) on 200 of the built-in 8x8 digits:
//!
//! ```
//! use memaudit_experiments::dynamics::easy_hard::{self, EasyHardConfig};
//! use memaudit_experiments::{NullObserver, config};
//!
//! let toml = r#"
//!     runs = 3
//!     kinds = ["real", "randx"]
//!     batch_size = 20
//!     [images]
//!     data = "digits"
//!     max_train = 200
//!     [mlp]
//!     hidden = [16]
//! "#;
//! let cfg: EasyHardConfig = config::from_toml_str(toml, "inline.toml".as_ref())?;
//! let result = easy_hard::run(&cfg, &mut NullObserver)?;
//! assert_eq!(result.kinds.len(), 2);
//! // Real digits have consistently easy and hard examples: per-example rates spread more than
//! // identical coins would (variance ratio > 1); the JSON is the CLI's `--json`.
//! println!("{}", serde_json::to_string(&result)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Example: a Secret Sharer experiment from Rust
//!
//! Canaries `my pin is {digits:3}` inserted 1 and 8 times into the embedded corpus (Moby Dick),
//! a 1x16 LSTM trained for one epoch on 100 windows, then every canary's exposure (exact over the
//! 1000 candidates) and the extraction search (Carlini et al. 2019):
//!
//! ```
//! use memaudit_experiments::secret_sharer::{self, SecretSharerConfig};
//! use memaudit_experiments::NullObserver;
//!
//! let dir = tempfile::tempdir()?;
//! let mut cfg = SecretSharerConfig::default();
//! cfg.canary.template = "my pin is {digits:3}".into();
//! (cfg.canary.canaries, cfg.canary.repetitions, cfg.canary.held_out) = (1, vec![1, 8], 3);
//! (cfg.model.rnn_hidden, cfg.model.rnn_layers, cfg.model.embed) = (16, 1, 8);
//! (cfg.data.max_train, cfg.data.seq_len) = (Some(100), 40);
//! (cfg.run.epochs, cfg.run.batch_size, cfg.run.seed) = (1, 16, Some(7));
//! (cfg.exposure.references, cfg.extraction.extract_budget) = (64, 2000);
//! cfg.run.out = dir.path().join("run");
//! let result = secret_sharer::run(&cfg, &mut NullObserver)?;
//! // One row per repetition count: held out (0), 1 and 8; exposures are at most log2 |R|.
//! assert_eq!(result.by_repetitions.len(), 3);
//! assert!(result.canaries.iter().all(|c| c.exposure.unwrap().0 <= result.log2_space));
//! // The JSON is the CLI's `memaudit secret-sharer --json`.
//! println!("{}", serde_json::to_string(&result)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attacks;
pub mod audit_canaries;
pub mod config;
pub mod data;
pub mod datasets;
pub mod dp_sweep;
pub mod dynamics;
pub mod error;
pub mod eval;
pub mod exposure;
pub mod extract;
pub mod lower_bound;
pub mod mia;
pub mod num;
pub mod observer;
pub mod optim;
pub mod pipeline;
pub mod registry;
pub mod rendered;
pub mod report;
pub mod rundir;
pub mod sample;
pub mod sanity;
pub mod saved_run;
pub mod secret_sharer;
pub mod train;

pub use config::ExperimentConfig;
pub use error::{ExperimentError, Result};
pub use num::Num;
pub use observer::{MetricsRow, NullObserver, Observer, Recorder};
