//! The configs that run as they are: [`EXAMPLE`], the commented config `memaudit audit
//! --example` prints, and [`demo`], the audit `memaudit demo` runs.

use super::config::{
    AuditConfig, AuditsSection, CanarySection, DataSection, DpSection, ExposureSection,
    ExtractionSection, LowerBoundSection, MiaSection, ModelSection, TrainingSection, Variant,
};

/// The audit `memaudit demo` runs on the embedded corpus (Moby Dick, ch. 1-42): a plain and a
/// DP-SGD character LSTM (`epsilon` at delta 1e-5, Poisson sampling), "my pin is {digits:4}"
/// canaries (|R| = 10^4, so exposure is exact), extraction, a small membership inference, and
/// the white-box and one-run bounds. `quick`: the same steps on 400 windows and a small model
/// (seconds). `epochs`: of each model (default 8; 1 with `quick`).
pub fn demo(quick: bool, epsilon: f64, epochs: Option<usize>, seed: u64) -> AuditConfig {
    let epochs = epochs.unwrap_or(if quick { 1 } else { 8 });
    let dp = Variant {
        name: "private".into(),
        dp: Some(DpSection {
            target_epsilon: Some(epsilon),
            ..DpSection::default()
        }),
        // DP-SGD wants larger batches (the noise is divided by the batch size).
        batch_size: Some(if quick { 64 } else { 128 }),
        ..Variant::default()
    };
    AuditConfig {
        seed,
        data: DataSection {
            max_train: quick.then_some(400),
            ..DataSection::default()
        },
        model: ModelSection {
            hidden: if quick { 48 } else { 128 },
            ..ModelSection::default()
        },
        training: TrainingSection {
            epochs,
            ..TrainingSection::default()
        },
        variants: vec![Variant::default(), dp],
        canaries: CanarySection {
            per_repetition: if quick { 2 } else { 3 },
            repetitions: if quick {
                vec![1, 16]
            } else {
                vec![1, 4, 16, 64]
            },
            held_out: if quick { 20 } else { 50 },
            ..CanarySection::default()
        },
        audits: AuditsSection {
            exposure: ExposureSection::default(),
            extraction: ExtractionSection {
                budget: 100_000,
                top: 10,
            },
            // Small: one shadow pair (a shadow model per side of every example, and a target),
            // the demo's time budget (2-3 minutes of CPU) allows no more.
            mia: Some(MiaSection {
                shadow_pairs: 1,
                epochs: if quick { 1 } else { 2 },
                ..MiaSection::default()
            }),
            lower_bounds: LowerBoundSection {
                white_box_canaries: if quick { 64 } else { 1000 },
                one_run_canaries: if quick { 64 } else { 256 },
                significance: 0.05,
            },
        },
    }
}

/// The commented configuration `memaudit audit --example` prints. It runs as it is: a plain and
/// a DP character LSTM on the embedded corpus with every audit, sized for minutes on a laptop.
pub const EXAMPLE: &str = r#"# memaudit audit --config audit.toml: one config in, every audit run, one report out.
# Every key is optional (missing keys take their defaults); misspelt keys are errors.

seed = 1                          # seeds canaries, initialisation, batches, DP noise, shadow splits

[data]
corpus = "embedded"               # embedded (built in), a fetched corpus (ptb, moby-dick), or a path to your text
level = "char"                    # char or word
seq_len = 64                      # tokens per training window (one window = one example DP protects)
valid_fraction = 0.1
max_train = 1500                  # use at most this many training windows (drop it to use all)

[model]
kind = "lstm"                     # lstm, gru or gpt (a gpt is embed wide, layers deep; heads = 4, context = 128)
embed = 32
hidden = 64
layers = 1

[training]                        # shared by every variant; a variant may override epochs, batch_size, lr
epochs = 3
batch_size = 32
optimizer = "adam"
lr = 0.003

[[variants]]
name = "plain"                    # no privacy claim

[[variants]]
name = "dp-eps8"
batch_size = 128                  # DP-SGD wants larger batches
[variants.dp]
target_epsilon = 8.0              # the noise is calibrated to this epsilon at delta
delta = 1e-5
clip = 1.0
sampling = "poisson"
accountant = "rdp"

# [[variants]]
# name = "regularised"
# dropout = 0.2
# weight_decay = 0.0005

[canaries]                        # The Secret Sharer (Carlini et al. 2019)
template = "my pin is {digits:4}" # slots: {digits:N}, {letters:N}, {alphabet=SYMBOLS:N}
per_repetition = 2                # canaries per repetition count
repetitions = [1, 16]             # each canary is inserted this many times
held_out = 20                     # never-inserted canaries: the chance baseline

[audits.exposure]
method = "auto"                   # exact rank over all of R when |R| <= exact_limit, else sampled
exact_limit = 10000000
references = 2048

[audits.extraction]
budget = 20000                    # trie nodes the best-first search may expand (0: no extraction)
top = 10                          # extracted = among the 10 most likely candidates

[audits.mia]                      # membership inference with shadow models (drop the table to skip)
attacks = ["loss", "lira-online", "rmia-online"]
shadow_pairs = 2
epochs = 2
batch_size = 32

[audits.lower_bounds]             # empirical lower bounds on epsilon (Steinke et al. 2023)
white_box_canaries = 256          # Dirac gradient canaries, each inserted with probability 1/2 (0: off)
one_run_canaries = 256            # random windows, each included with probability 1/2 (0: off)
significance = 0.05               # family-wise, Bonferroni over every bound reported
"#;

/// The commented configuration `memaudit audit --example dataset` prints. It runs as it is: a
/// plain and a DP multilayer perceptron on the built-in digits (sklearn's 8x8 digits, 1347
/// training images), with membership inference and the white-box and one-run bounds, in about a
/// minute on a laptop.
pub const EXAMPLE_DATASET: &str = r#"# memaudit audit --config audit.toml on a classifier dataset: one config in, every audit run,
# one report out. Every key is optional (missing keys take their defaults); misspelt keys are
# errors. With a dataset the Secret Sharer's text canaries, exposure and extraction do not
# apply: a [canaries], [audits.exposure] or [audits.extraction] table is an error.

seed = 1                          # seeds initialisation, batches, DP noise, audit canaries, shadow splits

[data]
dataset = "digits"                # digits (built in), mnist or fashion-mnist (memaudit data fetch)
# max_train = 1000                # use at most this many training images

[model]
kind = "mlp"                      # mlp, tutorial-cnn or groupnorm-cnn (the CNNs need 28x28 images: mnist)
hidden = 128                      # units per hidden layer
layers = 1                        # hidden layers

[training]                        # shared by every variant; a variant may override epochs, batch_size, lr
epochs = 20
batch_size = 32
optimizer = "adam"
lr = 0.003

[[variants]]
name = "plain"                    # no privacy claim

[[variants]]
name = "dp-eps4"
batch_size = 128                  # DP-SGD wants larger batches
[variants.dp]
target_epsilon = 4.0              # the noise is calibrated to this epsilon at delta
delta = 1e-5
clip = 1.0
sampling = "poisson"
accountant = "rdp"

# [[variants]]
# name = "regularised"
# dropout = 0.2
# weight_decay = 0.0005

[audits.mia]                      # membership inference with shadow models (drop the table to skip)
attacks = ["loss", "lira-online", "rmia-online"]  # on the logit confidence phi of the true class
shadow_pairs = 8                  # 16 shadow models and a target per variant
epochs = 20
batch_size = 32

[audits.lower_bounds]             # empirical lower bounds on epsilon (Steinke et al. 2023)
white_box_canaries = 2000         # Dirac gradient canaries, each inserted with probability 1/2 (0: off)
one_run_canaries = 500            # relabelled training images, each included with probability 1/2 (0: off)
significance = 0.05               # family-wise, Bonferroni over every bound reported
"#;
