//! The text variant on generated reviews (the IMDB data is not available to tests); the image
//! attacks run end to end in the CLI's tests (`tests/cli_attack.rs`, on the bundled digits).

use std::sync::Arc;

use memaudit_data::{TextVectorizer, VectorizerOptions};
use memaudit_engine::SparseInput;
use memaudit_engine::datasets::SparseDataset;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lsb::{self, LsbConfig, LsbDecoding};
use super::regulariser::{self, Encoding, RegulariserConfig};
use super::task::{Env, Task, TextTask};
use crate::datasets::DataSettings;
use crate::observer::NullObserver;

/// 700 reviews (300 to train on, 400 to test) of 25 words from a 2000-word vocabulary; positive
/// reviews draw 70% of their words from the first half, negative ones from the second, so the
/// task is learnable.
fn text_task() -> Task {
    let mut rng = StdRng::seed_from_u64(3);
    let mut docs = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..700 {
        let label: bool = rng.random();
        let words: Vec<String> = (0..25)
            .map(|_| {
                let favoured = rng.random_bool(0.7);
                let first_half = favoured == label;
                let w = rng.random_range(0..1000) + if first_half { 0 } else { 1000 };
                format!("w{w:04}")
            })
            .collect();
        docs.push(words.join(" "));
        labels.push(u32::from(label));
    }
    let vec = TextVectorizer::fit(&docs[..300], VectorizerOptions::default()).unwrap();
    let to_ds = |d: &[String], l: &[u32]| {
        let m = vec.transform(d);
        SparseDataset {
            rows: SparseInput {
                dim: m.cols,
                row_ptr: m.row_ptr,
                indices: m.indices,
                values: m.values,
            },
            labels: l.to_vec(),
        }
    };
    Task::Text(TextTask {
        data: DataSettings {
            data: "imdb".into(),
            ..Default::default()
        },
        train: Arc::new(to_ds(&docs[..300], &labels[..300])),
        test: Arc::new(to_ds(&docs[300..], &labels[300..])),
        terms: vec.terms().to_vec(),
    })
}

fn env(obs: &mut NullObserver) -> Env<'_, 'static> {
    Env {
        obs,
        hooks: Default::default(),
    }
}

#[test]
fn sign_encoding_recovers_generated_reviews_word_for_word() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = RegulariserConfig::default();
    cfg.common.run.epochs = 30;
    cfg.common.optim.optimizer = Some("adam".into());
    cfg.common.run.seed = Some(1);
    cfg.common.run.out = d.path().join("sign");
    let task = text_task();
    let Task::Text(t) = &task else { unreachable!() };
    let vocab = t.terms.len();
    let mut obs = NullObserver;
    let r = regulariser::run_task(Encoding::Sign, &cfg, 100.0, task, &mut env(&mut obs)).unwrap();
    // 2 x vocab weights, one bit each; every word is ceil(log2(vocab + 1)) bits.
    assert_eq!(r.capacity.available, 2 * vocab);
    let j = serde_json::to_value(&r).unwrap();
    assert!(j["secret"]["documents"].as_u64().unwrap() >= 10, "{j}");
    let dec = &r.decoding;
    let g = |x: Option<crate::Num>| x.unwrap().0;
    // Observed: 99.2% correct signs; corpus precision and recall 0.92. A wrong bit in an
    // end-of-document code merges or splits documents and shifts the rest, so the
    // per-document score (0.70) is lower; it is never above the corpus score.
    assert!(g(dec.correct_signs) > 0.98, "{j}");
    assert!(
        g(dec.corpus_precision) > 0.85 && g(dec.corpus_recall) > 0.85,
        "{j}"
    );
    assert!(g(dec.precision) <= g(dec.corpus_precision) && g(dec.recall) <= g(dec.corpus_recall));
    assert!(g(r.control_conventional.corpus_recall) < 0.2, "{j}");
    // Every weight of this 2 x 1964 model carries a bit, including the ones the task needs,
    // so lambda = 100 costs some accuracy: observed 5 points with one batch order and 10.5
    // with another (the seeded sampler draws batch t from (seed, t)); on 400 test reviews
    // each accuracy has a standard error of ~2 points, so the bound is 15.
    assert!(r.accuracy_drop_points.0.abs() < 15.0, "{j}");
    assert!(r.first_review.is_some());
    // run.json holds the typed result.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("sign/run.json")).unwrap()).unwrap();
    assert_eq!(run["results"], j);
}

#[test]
fn lsb_round_trips_generated_reviews_and_refuses_too_many() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = LsbConfig::default();
    cfg.common.run.epochs = 2;
    cfg.common.run.seed = Some(1);
    cfg.common.run.out = d.path().join("lsb");
    let mut obs = NullObserver;
    let r = lsb::run_task(&cfg, &[4], None, text_task(), &mut env(&mut obs)).unwrap();
    let s = &r.settings[0];
    assert!(s.round_trip_exact);
    let LsbDecoding::Text { precision, recall } = s.decoding else {
        panic!("text decoding expected: {:?}", s.decoding)
    };
    assert_eq!((precision.0, recall.0), (1.0, 1.0));
    // all 300 reviews do not fit in 4002 params x 1 bit
    cfg.common.secret_count = Some(300);
    cfg.common.run.force = true;
    let Err(err) = lsb::run_task(&cfg, &[1], None, text_task(), &mut env(&mut obs)) else {
        panic!("300 reviews fit in 4002 bits")
    };
    let msg = err.to_string();
    assert!(
        msg.starts_with("bits 1:")
            && msg.contains("`common.secret_count` 300")
            && msg.contains("holds only"),
        "{msg}"
    );
}
