//! The privacy core: every epsilon comes from the trainer's ledger, a seeded run resumes to the
//! same parameters as an uninterrupted one, the trainer's real noise has the stated size, edited
//! sidecars are refused, and a layer with parameters but no per-example rule cannot train.

mod common;

use common::Blobs;

use memaudit_accounting::{AccountantKind, DpEvent, dp_sgd_event, epsilon_for};
use memaudit_engine::layer::*;
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::model::Model;
use memaudit_engine::optim::{OptimizerConfig, Schedule};
use memaudit_engine::params::ParamKind;
use memaudit_engine::privacy;
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::tensor::Tensor;
use memaudit_engine::train::{
    ClipConfig, Dataset, PrivacyConfig, Silent, StopReason, TrainConfig, Trainer,
};
use memaudit_engine::{ModelConfig, Result};

fn config(
    hidden: usize,
    batch: usize,
    sampling: SamplingMode,
    z: f64,
    clipping: ClipConfig,
) -> TrainConfig {
    TrainConfig {
        model: ModelConfig::Mlp {
            input: 10,
            hidden: vec![hidden],
            classes: 2,
            activation: ActivationKind::Relu,
            dropout: 0.2,
            input_dropout: 0.0,
        },
        optimizer: OptimizerConfig::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        schedule: Schedule::Constant,
        epochs: 3,
        batch_size: batch,
        physical_batch: Some(16),
        sampling,
        seed: 11,
        privacy: Some(PrivacyConfig {
            noise_multiplier: z,
            clipping,
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            max_epsilon: None,
        }),
        seeded_noise: true,
    }
}

fn eps(ev: &DpEvent) -> f64 {
    epsilon_for(ev, 1e-5, AccountantKind::Rdp).unwrap().epsilon
}

/// A run trained in one process and the same run stopped after every epoch and resumed (what a
/// kill right after a checkpoint leaves) end with bit-identical parameters: with --seeded-noise the
/// batches, the dropout masks and the noise of step t are functions of (seed, t) alone.
#[test]
fn a_seeded_run_resumed_after_each_epoch_equals_the_uninterrupted_run() {
    let train = Blobs::new(600, 10, 1);
    let adaptive = ClipConfig::Adaptive {
        initial: 0.5,
        target_quantile: 0.5,
        learning_rate: 0.2,
        count_stddev: None,
        geometric: true,
    };
    for (sampling, clip) in [
        (SamplingMode::Poisson, ClipConfig::Flat { bound: 1.0 }),
        (SamplingMode::Shuffle, ClipConfig::Flat { bound: 1.0 }),
        (SamplingMode::Poisson, adaptive),
    ] {
        let cfg = config(16, 40, sampling, 1.1, clip);
        let whole_dir = tempfile::tempdir().unwrap();
        let mut whole =
            Trainer::new(cfg.clone(), train.len(), Some(whole_dir.path()), false).unwrap();
        whole.run(&train, None, &mut Silent).unwrap();

        let dir = tempfile::tempdir().unwrap();
        for epochs in 1..=3 {
            let mut c = cfg.clone();
            c.epochs = epochs;
            let mut t = Trainer::new(c, train.len(), Some(dir.path()), epochs > 1).unwrap();
            t.run(&train, None, &mut Silent).unwrap();
            if epochs == 3 {
                assert_eq!(t.step, whole.step);
                assert!(
                    t.params == whole.params,
                    "{sampling:?}: resumed parameters differ from the uninterrupted run"
                );
                // The same steps, so the same guarantee (Poisson: composition is associative;
                // shuffled: every segment starts on a window boundary here).
                let (a, b) = (
                    t.epsilon().unwrap().unwrap(),
                    whole.epsilon().unwrap().unwrap(),
                );
                assert!((a - b).abs() < 1e-9 * a, "{a} vs {b}");
                assert_eq!(t.ledger().unwrap().segments.len(), 3);
            }
        }
    }
}

/// The noise of the trainer's real step: with C tiny and sigma huge the update is noise alone, so
/// with SGD at lr 1 each parameter moves by N(0, (sigma C / B)^2) per step, B the *expected* batch
/// size (dividing by the realised size would leak it). d = 3,362 parameters: the sd estimate has
/// relative error ~1/sqrt(2 d steps) ~ 1.2% for one step; 6% is five standard errors.
#[test]
fn the_trainers_update_noise_has_std_sigma_c_over_the_expected_batch() {
    let train = Blobs::new(1000, 10, 2);
    for (batch, steps) in [(1000usize, 1u64), (50, 20)] {
        let (z, c) = (1e4, 1e-6);
        let mut cfg = config(
            256,
            batch,
            SamplingMode::Poisson,
            z,
            ClipConfig::Flat { bound: c },
        );
        cfg.epochs = 1;
        cfg.optimizer = OptimizerConfig::Sgd {
            lr: 1.0,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        cfg.model = ModelConfig::Mlp {
            input: 10,
            hidden: vec![256],
            classes: 2,
            activation: ActivationKind::Relu,
            dropout: 0.0,
            input_dropout: 0.0,
        };
        let mut t = Trainer::new(cfg, train.len(), None, false).unwrap();
        let before = t.params.clone();
        t.run(&train, None, &mut Silent).unwrap();
        assert_eq!(t.step, steps);
        let d: Vec<f64> = t
            .params
            .iter()
            .zip(&before)
            .map(|(a, b)| (*a as f64) - (*b as f64))
            .collect();
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = z * c / batch as f64 * (steps as f64).sqrt();
        assert!(
            (sd / want - 1.0).abs() < 0.06,
            "batch {batch}: update sd {sd}, want sigma C sqrt(steps) / B = {want}"
        );
        assert!(mean.abs() < 5.0 * want / n.sqrt(), "mean {mean}");
    }
}

/// Shuffled batches get no amplification: each epoch is one Gaussian release of every example,
/// so that is the guarantee (reported as `epsilon`), and budget stops use it. The Poisson figure
/// is reported only as `epsilon_if_poisson`.
#[test]
fn shuffled_runs_report_and_budget_the_no_amplification_epsilon() {
    let train = Blobs::new(600, 10, 3);
    let mut cfg = config(
        16,
        60,
        SamplingMode::Shuffle,
        1.0,
        ClipConfig::Flat { bound: 1.0 },
    );
    cfg.epochs = 2;
    let mut t = Trainer::new(cfg.clone(), train.len(), None, false).unwrap();
    t.run(&train, None, &mut Silent).unwrap();
    let guarantee = eps(&dp_sgd_event(1.0, 1.0, 2));
    assert_eq!(t.epsilon().unwrap(), Some(guarantee));
    let poisson = t.epsilon_if_poisson().unwrap().unwrap();
    assert_eq!(poisson, eps(&dp_sgd_event(0.1, 1.0, 20)));
    assert!(poisson < guarantee);

    // A budget between one and two epochs' guarantee stops after the first epoch's 10 steps.
    let one = eps(&dp_sgd_event(1.0, 1.0, 1));
    cfg.epochs = 5;
    if let Some(p) = cfg.privacy.as_mut() {
        p.max_epsilon = Some((one + guarantee) / 2.0);
    }
    let mut b = Trainer::new(cfg.clone(), train.len(), None, false).unwrap();
    assert_eq!(
        b.run(&train, None, &mut Silent).unwrap(),
        StopReason::PrivacyBudget
    );
    assert_eq!(b.step, 10);
    assert!(b.epsilon().unwrap().unwrap() <= (one + guarantee) / 2.0);

    // Calibration for a shuffled run targets its guarantee, not the Poisson figure.
    let s = privacy::calibrate_planned(
        SamplingMode::Shuffle,
        600,
        60,
        2,
        1e-5,
        2.0,
        AccountantKind::Rdp,
    )
    .unwrap();
    let reached = eps(&dp_sgd_event(1.0, s, 2));
    assert!(reached <= 2.0 && reached > 1.99, "{reached}");
}

/// The sidecar is cross-checked, not believed: lowering the ledger's step count (to shrink
/// epsilon) or setting an impossible step is refused on resume.
#[test]
fn an_edited_checkpoint_ledger_is_refused() {
    let train = Blobs::new(600, 10, 4);
    let mut cfg = config(
        8,
        40,
        SamplingMode::Poisson,
        1.0,
        ClipConfig::Flat { bound: 1.0 },
    );
    cfg.epochs = 1;
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(cfg.clone(), train.len(), Some(dir.path()), false)
        .unwrap()
        .run(&train, None, &mut Silent)
        .unwrap();
    let latest = std::fs::read_to_string(dir.path().join("latest")).unwrap();
    let state_path = dir.path().join(latest.trim()).join("state.json");
    let original = std::fs::read_to_string(&state_path).unwrap();
    cfg.epochs = 2;
    let resume = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
        edit(&mut v);
        std::fs::write(&state_path, serde_json::to_string(&v).unwrap()).unwrap();
        match Trainer::new(cfg.clone(), train.len(), Some(dir.path()), true) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(resume(&|_| {}), "accepted");
    let fewer = resume(&|v| v["trainer"]["ledger"]["segments"][0]["steps"] = 1.into());
    assert!(fewer.contains("account for 1 private steps"), "{fewer}");
    let huge = resume(&|v| {
        v["step"] = u64::MAX.into();
        v["trainer"]["ledger"]["segments"][0]["steps"] = u64::MAX.into();
    });
    assert!(huge.contains("cannot make"), "{huge}");
    let other_data = resume(&|v| v["trainer"]["ledger"]["segments"][0]["dataset_size"] = 60.into());
    assert!(other_data.contains("60 examples"), "{other_data}");
}

/// A layer with parameters whose per-example rules are the parameterless no-ops: `Model::new`
/// refuses it, so it can never train unclipped. (A layer with no rules at all does not compile:
/// see the `compile_fail` example on `Layer::add_sq_norms`.)
#[test]
fn a_layer_with_parameters_but_no_per_example_rule_cannot_train() {
    struct ScaleWithoutRule;
    impl Layer for ScaleWithoutRule {
        memaudit_engine::no_parameter_gradients!();
        fn kind(&self) -> &'static str {
            "scale"
        }
        fn params(&self) -> Vec<ParamDesc> {
            vec![ParamDesc::new("weight", vec![10], ParamKind::Weight)]
        }
        fn out_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
            Ok(input.to_vec())
        }
        fn forward(
            &self,
            _p: &[f32],
            x: &Value,
            _c: &mut ForwardCtx<'_>,
        ) -> Result<(Tensor, Cache)> {
            Ok((x.dense()?.clone(), nothing()))
        }
        fn backward(
            &self,
            _p: &[f32],
            _x: &Value,
            _c: &Cache,
            dy: Tensor,
            _need_dx: bool,
        ) -> Result<(Option<Tensor>, GradState)> {
            Ok((Some(dy), nothing()))
        }
        fn reference_forward(&self, _p: &[f64], x: &RefValue) -> Result<RefValue> {
            Ok(x.clone())
        }
    }
    let err = Model::new(vec![("scale".into(), Box::new(ScaleWithoutRule))])
        .err()
        .expect("a parameterised layer without a rule must be refused")
        .to_string();
    assert!(err.contains("no per-example gradient rule"), "{err}");
}
