//! Arpit et al., "A Closer Look at Memorization in Deep Networks" (ICML 2017): measurements that
//! tell learning patterns from memorising noise, on the memaudit engine.
//!
//! - [`corruption`]: randY (random labels) and randX (Gaussian inputs matched to the data's mean
//!   and variance) for a fraction of the training set, corrupted indices recorded; 14x14
//!   downscaling; one-class-per-example labels.
//! - [`training`]: the experiments' training loop with per-epoch accuracy on clean and corrupted
//!   examples, validation accuracy, validation CSR, time-to-fit, input-noise and adversarial
//!   (LASS) regularisers.
//! - [`easy_hard`](mod@easy_hard): per-example misclassification after one epoch over many seeds (§3.1).
//! - [`sensitivity`]: loss-sensitivity through the unrolled SGD steps (§3.2), exact in f64 with
//!   forward-over-reverse second derivatives, and the cheaper direct input-gradient estimate.
//! - [`stats`]: the Gini coefficient and the binomial dispersion of per-example rates.
//! - [`lass`](mod@lass): critical samples and the critical sample ratio by Langevin Adversarial Sample
//!   Search (§4.1, the authors' `lass_tf.py`).
//! - [`sweep`]: the regulariser sweep of §5 (randY training accuracy against real validation
//!   accuracy).
//!
//! Definitions, scale-down and measured results: `docs/dynamics.md` in the repository.

pub mod corruption;
pub mod easy_hard;
pub mod error;
pub mod lass;
pub mod sensitivity;
pub mod stats;
pub mod sweep;
pub mod training;

pub use corruption::{
    Corrupted, NoiseKind, check_fraction, corrupt, downscale, unique_class_labels,
};
pub use easy_hard::{EasyHard, easy_hard};
pub use error::{DynamicsError, Result};
pub use lass::{LassConfig, LassOutcome, lass, project_box, require_dense_classifier};
pub use sensitivity::{
    LossSensitivity, SensitivityConfig, SensitivityPoint, SmallMlp, loss_sensitivity,
};
pub use stats::{Dispersion, binomial_dispersion, gini};
pub use sweep::{Regularizer, SweepPoint, least_memorization_at_equal_accuracy, sweep_point};
pub use training::{
    AdversarialTraining, CsrTracking, EpochRecord, Tracking, TrainSpec, TrainedRun,
    input_gradient_l1, per_example_correct, train_tracked,
};
