//! Training actually learns: an MLP on the 8x8 digits (1,797 images; plain softmax regression
//! reaches ~96%) must reach >= 97% test accuracy. Runs in a few seconds.

use memaudit_engine::ModelConfig;
use memaudit_engine::datasets::DenseDataset;
use memaudit_engine::layers::ActivationKind;
use memaudit_engine::optim::{OptimizerConfig, Schedule};
use memaudit_engine::sampler::SamplingMode;
use memaudit_engine::train::{Silent, TrainConfig, Trainer};

fn dataset(set: &memaudit_data::ImageSet) -> DenseDataset {
    DenseDataset::new(
        set.to_unit_f32(),
        vec![64],
        set.labels.iter().map(|&l| l as u32).collect(),
    )
    .unwrap()
}

#[test]
fn mlp_on_digits_reaches_97_percent() {
    let all = memaudit_data::digits().unwrap();
    let (train, test) = all.split_train_test(0.25, 0).unwrap();
    let (train, test) = (dataset(&train), dataset(&test));
    let cfg = TrainConfig {
        model: ModelConfig::Mlp {
            input: 64,
            hidden: vec![256],
            classes: 10,
            activation: ActivationKind::Relu,
            dropout: 0.0,
            input_dropout: 0.0,
        },
        optimizer: OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
        },
        schedule: Schedule::Cosine {
            total: 40 * 42,
            min_factor: 0.0,
        },
        epochs: 40,
        batch_size: 32,
        physical_batch: None,
        sampling: SamplingMode::Shuffle,
        seed: 3, // seeds 1-5 give 97.3-97.8% on this split
        privacy: None,
        seeded_noise: false,
    };
    let mut t = Trainer::new(cfg, train.labels.len(), None, false).unwrap();
    t.run(&train, None, &mut Silent).unwrap();
    let acc = t.evaluate(&test).unwrap().accuracy;
    eprintln!("8x8 digits MLP test accuracy: {acc:.4}");
    assert!(acc >= 0.97, "test accuracy {acc}");
}
