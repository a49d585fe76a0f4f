//! LOSS (Yeom et al. 2018): a global threshold on the target model's loss on the example,
//! as a score: log Pr(x | target) on the identity query (query 0), i.e. minus the loss.
//! Needs no shadow model.

use super::data::ScoreSet;

/// -loss of the target on each example's identity query.
pub fn loss_scores(set: &ScoreSet) -> Vec<f64> {
    let kind = set.signal_kind();
    (0..set.n())
        .map(|i| kind.log_probability(set.target(i, 0)))
        .collect()
}
