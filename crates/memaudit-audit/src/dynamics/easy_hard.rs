//! Easy and hard examples (Arpit et al. §3.1, Fig. 1): train for **one epoch** from many random
//! initialisations and data orders, and record each training example's misclassification rate
//! over the runs. Real data has consistently easy and consistently hard examples (a broad
//! spread); for randX every example is equally hard, so the rates follow Binomial(S, p) / S;
//! randY lies in between.

use memaudit_engine::datasets::DenseDataset;
use serde::Serialize;

use super::error::{Result, invalid};
use super::stats::{Dispersion, binomial_dispersion};
use super::training::{Tracking, TrainSpec, mix, per_example_correct, train_tracked};

/// Per-example misclassification rates over `seeds` one-epoch runs.
#[derive(Clone, Debug, Serialize)]
pub struct EasyHard {
    pub runs: usize,
    /// Fraction of the runs that misclassified each training example after one epoch.
    pub misclassification: Vec<f64>,
    /// Mean training accuracy after one epoch over the runs.
    pub mean_accuracy: f64,
    /// Spread of the per-example *correct* rates against identical Binomial(S, p) coins.
    pub dispersion: Dispersion,
    /// Mean correct rate of the examples of each class (label).
    pub class_correct: Vec<f64>,
    /// The same ratio within classes: sum over classes of the squared deviations from the class
    /// mean, over sum of n_c p_c (1 - p_c) / S. A network that learns only the label prior (all
    /// it can learn from randX inputs) predicts the frequent classes, which makes correctness
    /// depend on the label; within a class the examples are exchangeable, so this ratio is about
    /// 1 for randX and stays high where examples differ in difficulty.
    pub within_class_ratio: f64,
}

/// Train `spec` (its epoch count is ignored: one epoch) once per seed `base_seed + k`, k <
/// `runs`, each with its own initialisation and batch order, and evaluate every training example.
pub fn easy_hard(
    spec: &TrainSpec,
    train: &DenseDataset,
    runs: usize,
    base_seed: u64,
    on_run: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<EasyHard> {
    if runs < 2 {
        return Err(invalid(
            format!("{runs} runs"),
            "easy/hard examples need at least 2 runs (the paper uses 100)",
        ));
    }
    let n = train.labels.len();
    let mut wrong = vec![0usize; n];
    let mut acc_sum = 0.0;
    for k in 0..runs {
        let s = TrainSpec {
            epochs: 1,
            seed: mix(base_seed, k as u64),
            ..spec.clone()
        };
        let run = train_tracked(&s, train, &Tracking::default(), &mut |_| Ok(()))?;
        let (correct, _) = per_example_correct(&run.model, &run.params, train, 1000)?;
        for (w, c) in wrong.iter_mut().zip(&correct) {
            *w += (!c) as usize;
        }
        acc_sum += correct.iter().filter(|&&c| c).count() as f64 / n as f64;
        on_run(k + 1)?;
    }
    let misclassification: Vec<f64> = wrong.iter().map(|&w| w as f64 / runs as f64).collect();
    let correct_rates: Vec<f64> = misclassification.iter().map(|m| 1.0 - m).collect();
    let (class_correct, within_class_ratio) =
        within_class_dispersion(&correct_rates, &train.labels, runs);
    Ok(EasyHard {
        runs,
        dispersion: binomial_dispersion(&correct_rates, runs)?,
        misclassification,
        mean_accuracy: acc_sum / runs as f64,
        class_correct,
        within_class_ratio,
    })
}

/// Per-class mean rates and the pooled within-class variance over the pooled within-class
/// binomial variance (see [`EasyHard::within_class_ratio`]).
pub fn within_class_dispersion(rates: &[f64], labels: &[u32], trials: usize) -> (Vec<f64>, f64) {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut sum = vec![0.0; classes];
    let mut count = vec![0usize; classes];
    for (&r, &l) in rates.iter().zip(labels) {
        sum[l as usize] += r;
        count[l as usize] += 1;
    }
    let mean: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, &c)| if c > 0 { s / c as f64 } else { f64::NAN })
        .collect();
    let mut ss = 0.0;
    for (&r, &l) in rates.iter().zip(labels) {
        ss += (r - mean[l as usize]).powi(2);
    }
    let binom: f64 = mean
        .iter()
        .zip(&count)
        .filter(|(_, c)| **c > 0)
        .map(|(p, &c)| c as f64 * p * (1.0 - p) / trials as f64)
        .sum();
    let ratio = if binom > 0.0 { ss / binom } else { f64::NAN };
    (mean, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::corruption::{NoiseKind, corrupt};
    use crate::dynamics::training::tests::digits_flat;
    use memaudit_engine::ModelConfig;
    use memaudit_engine::layers::ActivationKind;
    use memaudit_engine::optim::{OptimizerConfig, Schedule};

    #[test]
    fn real_digits_spread_far_more_than_binomial_and_rand_x_does_not() {
        let (train, _) = digits_flat();
        let spec = TrainSpec {
            model: ModelConfig::Mlp {
                input: 64,
                hidden: vec![64],
                classes: 10,
                activation: ActivationKind::Relu,
                dropout: 0.0,
                input_dropout: 0.0,
            },
            optimizer: OptimizerConfig::Sgd {
                lr: 0.05,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            schedule: Schedule::Constant,
            epochs: 1,
            batch_size: 16,
            seed: 0,
            input_noise: 0.0,
            adversarial: None,
        };
        let runs = 12;
        let real = easy_hard(&spec, &train, runs, 1, &mut |_| Ok(())).unwrap();
        let rx = corrupt(&train, 10, NoiseKind::RandX, 1.0, 2).unwrap();
        let randx = easy_hard(&spec, &rx.data, runs, 1, &mut |_| Ok(())).unwrap();
        assert_eq!(real.misclassification.len(), train.labels.len());
        // One epoch of SGD learns digits partly; random inputs stay near chance.
        assert!(real.mean_accuracy > 0.5, "{}", real.mean_accuracy);
        assert!(randx.mean_accuracy < 0.3, "{}", randx.mean_accuracy);
        // Real: consistently easy/hard examples, variance many times the binomial one (measured
        // 5.4 at these seeds). randX: nearer binomial (measured 2.2: on 64-pixel noise a one-epoch
        // MLP still memorises some inputs more readily than others, e.g. those of larger norm,
        // the same way in every run); the real spread must be well beyond it.
        assert!(real.dispersion.ratio > 3.0, "{:?}", real.dispersion);
        assert!(
            real.dispersion.ratio > 2.0 * randx.dispersion.ratio,
            "real {:?} randX {:?}",
            real.dispersion,
            randx.dispersion
        );
        assert!(real.within_class_ratio > 2.0 * randx.within_class_ratio);
        assert!(easy_hard(&spec, &train, 1, 1, &mut |_| Ok(())).is_err());
    }

    #[test]
    fn within_class_dispersion_removes_label_effects() {
        // Class 0 always right, class 1 right half the time for every example: the overall
        // spread is all between classes; within classes the rates equal their class mean.
        let labels = [0u32, 0, 0, 1, 1, 1];
        let rates = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5];
        let (m, r) = within_class_dispersion(&rates, &labels, 10);
        assert_eq!(m, vec![1.0, 0.5]);
        assert_eq!(r, 0.0);
        // Spread inside class 1: squared deviations 2 x 0.2^2 = 0.08 over 3 x 0.25 / 10.
        let rates = [1.0, 1.0, 1.0, 0.3, 0.5, 0.7];
        let (_, r) = within_class_dispersion(&rates, &labels, 10);
        assert!((r - 0.08 / 0.075).abs() < 1e-12, "{r}");
    }
}
