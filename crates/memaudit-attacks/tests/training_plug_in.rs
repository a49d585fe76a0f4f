//! The malicious regularisers plugged into a (tiny) training loop through the engine's
//! `ParamPenalty` hook, as the training side will: a 2-class softmax regression on Gaussian
//! data (8 informative features out of 64), trained by full-batch gradient descent on
//! cross-entropy + penalty. At toy scale it shows the hook working and the paper's trade-off:
//! the secret goes into the weights the task does not need while test accuracy stays where the
//! honest model's is; a larger lambda buys more secret bits at some accuracy.

use memaudit_attacks::bits::bit_errors;
use memaudit_attacks::{
    CorrelationPenalty, ImageSecret, ParamPenalty, ParamSpec, SignPenalty,
    decode_correlation_images, decode_sign_images, score_correlation_decoding,
};
use memaudit_engine::params::ParamKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const D: usize = 64;

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let v: f64 = StandardNormal.sample(rng);
    v as f32
}
const N: usize = 400;

fn specs() -> Vec<ParamSpec> {
    vec![
        ParamSpec {
            name: "fc.w".into(),
            shape: vec![2, D],
            offset: 0,
            kind: ParamKind::Weight,
            layer: 0,
        },
        ParamSpec {
            name: "fc.b".into(),
            shape: vec![2],
            offset: 2 * D,
            kind: ParamKind::Bias,
            layer: 0,
        },
    ]
}

/// Examples and their labels.
type Split = (Vec<Vec<f32>>, Vec<usize>);

/// Two Gaussian classes, means ±mu, unit variance; `N` train and `N` test examples.
fn splits(seed: u64) -> (Split, Split) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mu: Vec<f32> = (0..D)
        .map(|j| if j < 8 { 0.4 * normal(&mut rng) } else { 0.0 })
        .collect();
    let mut draw = |n: usize| {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..n {
            let y = rng.random_range(0..2usize);
            let sign = if y == 1 { 1.0 } else { -1.0 };
            xs.push(mu.iter().map(|m| sign * m + normal(&mut rng)).collect());
            ys.push(y);
        }
        (xs, ys)
    };
    let train = draw(N);
    let test = draw(N);
    (train, test)
}

fn logits(params: &[f32], x: &[f32]) -> [f32; 2] {
    let mut z = [params[2 * D], params[2 * D + 1]];
    for (c, zc) in z.iter_mut().enumerate() {
        *zc += params[c * D..(c + 1) * D]
            .iter()
            .zip(x)
            .map(|(w, v)| w * v)
            .sum::<f32>();
    }
    z
}

fn accuracy(params: &[f32], xs: &[Vec<f32>], ys: &[usize]) -> f64 {
    let correct = xs
        .iter()
        .zip(ys)
        .filter(|&(x, &y)| {
            let z = logits(params, x);
            usize::from(z[1] > z[0]) == y
        })
        .count();
    correct as f64 / xs.len() as f64
}

/// Full-batch gradient descent on mean cross-entropy (+ the penalty, if any).
fn train(penalty: Option<&dyn ParamPenalty>, xs: &[Vec<f32>], ys: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params: Vec<f32> = (0..2 * D + 2).map(|_| 0.01 * normal(&mut rng)).collect();
    for _ in 0..300 {
        let mut grad = vec![0.0f32; params.len()];
        for (x, &y) in xs.iter().zip(ys) {
            let z = logits(&params, x);
            let m = z[0].max(z[1]);
            let e = [(z[0] - m).exp(), (z[1] - m).exp()];
            for c in 0..2 {
                let delta = (e[c] / (e[0] + e[1]) - f32::from(u8::from(c == y))) / xs.len() as f32;
                for (g, v) in grad[c * D..(c + 1) * D].iter_mut().zip(x) {
                    *g += delta * v;
                }
                grad[2 * D + c] += delta;
            }
        }
        if let Some(p) = penalty {
            p.value_and_grad(&params, &mut grad);
        }
        params
            .iter_mut()
            .zip(&grad)
            .for_each(|(p, g)| *p -= 0.5 * g);
    }
    params
}

/// Two 8x8 "digits": a ring and a bar, on a black background (full 0..=255 range).
fn two_images() -> ImageSecret {
    let mut pixels = vec![0u8; 2 * D];
    for y in 0..8 {
        for x in 0..8 {
            let r2 = (x as i32 * 2 - 7).pow(2) + (y as i32 * 2 - 7).pow(2);
            if (16..=40).contains(&r2) {
                pixels[y * 8 + x] = 255;
            }
            if x == 3 || x == 4 {
                pixels[D + y * 8 + x] = 200 + 7 * y as u8;
            }
        }
    }
    pixels[D] = 0;
    ImageSecret::new(2, 8, 8, pixels).unwrap()
}

#[test]
fn sign_encoding_trades_accuracy_for_bits_as_lambda_grows() {
    let ((xtr, ytr), (xte, yte)) = splits(1);
    let honest = train(None, &xtr, &ytr, 2);
    let honest_acc = accuracy(&honest, &xte, &yte);
    assert!(honest_acc > 0.7, "the task must be learnable: {honest_acc}");

    // 16 pixels = 128 bits, one per weight of the 2 x 64 matrix
    let secret =
        ImageSecret::new(1, 4, 4, (0..16).map(|i| (i * 37 % 256) as u8).collect()).unwrap();
    let mut previous = 0.0;
    for lambda in [1.0, 20.0, 200.0] {
        let penalty = SignPenalty::for_images(&specs(), &secret, lambda).unwrap();
        let malicious = train(Some(&penalty), &xtr, &ytr, 2);
        let correct = penalty.correct_sign(&malicious).unwrap();
        assert!(
            correct >= previous,
            "lambda {lambda}: correct signs fell from {previous} to {correct}"
        );
        previous = correct;
        // the decoder reads exactly the signs that correct_sign counts
        let decoded = decode_sign_images(&malicious, penalty.selection(), 1, 4, 4).unwrap();
        let errors = bit_errors(&decoded.to_bits(), &secret.to_bits());
        assert_eq!(errors, ((1.0 - correct) * 128.0).round() as usize);
        if lambda == 20.0 {
            // Weights on the 56 uninformative features are free to take any sign; on the 8
            // informative ones the secret can contradict the direction the task needs, which
            // is why a few bits stay wrong. Observed: 97.7% correct signs, accuracy 76.0% vs
            // 76.25% honest; we require 95% and 2 points (400 test examples, 0.25 points each).
            assert!(correct > 0.95, "{correct}");
            let acc = accuracy(&malicious, &xte, &yte);
            assert!(
                (acc - honest_acc).abs() <= 0.02,
                "honest {honest_acc}, malicious {acc}"
            );
        }
    }
    assert!(
        previous > 0.98,
        "a large lambda must enforce nearly every sign: {previous}"
    );
}

#[test]
fn correlated_value_encoding_correlates_weights_without_costing_accuracy() {
    let ((xtr, ytr), (xte, yte)) = splits(3);
    let honest = train(None, &xtr, &ytr, 4);
    let honest_acc = accuracy(&honest, &xte, &yte);
    let secret = two_images();
    let penalty = CorrelationPenalty::for_images(&specs(), &secret, 1.0).unwrap();
    let malicious = train(Some(&penalty), &xtr, &ytr, 4);
    let acc = accuracy(&malicious, &xte, &yte);
    // Observed: accuracy 79.0% for both; |r| 0.75 vs 0.05 for the honest weights.
    assert!(
        (acc - honest_acc).abs() <= 0.02,
        "honest {honest_acc}, malicious {acc}"
    );
    let r = penalty.pearson(&malicious).unwrap().abs();
    let honest_r = penalty.pearson(&honest).unwrap().abs();
    assert!(
        r > 0.6 && honest_r < 0.2,
        "|r|: honest {honest_r}, malicious {r}"
    );
    // Decoding quality (MAPE against the mean-image baseline) needs a model with spare capacity
    // and is measured by the CNN experiments, not by this 130-parameter toy.
    let decoded = decode_correlation_images(&malicious, penalty.selection(), 8, 8).unwrap();
    let scores = score_correlation_decoding(&decoded, &secret).unwrap();
    assert_eq!(scores.best_of_two.mape.len(), 2);
}
