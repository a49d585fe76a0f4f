//! The inputs of every attack: the target's and the shadow (reference) models' signals on the
//! examples, which shadow models trained on which example, and the optional extras (the target's
//! membership for evaluation, population points for RMIA, classes for slicing, per-token
//! log-probabilities and texts for the LM baselines).
//!
//! Arrays are flat, row-major, with the shapes of the score-file format (`docs/mia.md`):
//! `target` [n, q], `shadow` [k, n, q], `shadow_in` [k, n]. Every setter checks its shape against
//! the others and rejects non-finite signals, naming the array.

use super::error::{MiaError, Result};
use super::signals::SignalKind;

/// The target's and the shadow models' signals on population points z: points no model trained
/// on (RMIA compares each example with them).
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// Number of population points n_z.
    pub n: usize,
    /// The target's signal, [n_z, q].
    pub target: Vec<f64>,
    /// Each shadow model's signal, [k, n_z, q].
    pub shadow: Vec<f64>,
}

/// Everything an attack may read. Build with [`ScoreSet::new`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSet {
    n: usize,
    queries: usize,
    shadows: usize,
    target: Vec<f64>,
    shadow: Vec<f64>,
    shadow_in: Vec<bool>,
    signal_kind: SignalKind,
    target_in: Option<Vec<bool>>,
    population: Option<Population>,
    class: Option<Vec<i64>>,
    token_logprob: Option<Vec<Vec<f64>>>,
    text: Option<Vec<Vec<u8>>>,
}

fn check_finite(array: &str, shape: &[usize], values: &[f64]) -> Result<()> {
    if let Some(flat) = values.iter().position(|v| !v.is_finite()) {
        let mut index = vec![0; shape.len()];
        let mut rest = flat;
        for d in (0..shape.len()).rev() {
            index[d] = rest % shape[d].max(1);
            rest /= shape[d].max(1);
        }
        return Err(MiaError::NonFinite {
            array: array.into(),
            shape: shape.to_vec(),
            index,
        });
    }
    Ok(())
}

fn check_len(array: &str, shape: &[usize], len: usize, expected: String) -> Result<()> {
    if shape.iter().product::<usize>() != len {
        return Err(MiaError::Shape {
            array: array.into(),
            found: vec![len],
            expected: format!("{expected} (data of {len} values for shape {shape:?})"),
        });
    }
    Ok(())
}

impl ScoreSet {
    /// The required arrays: `target` [n, q], `shadow` [k, n, q], `shadow_in` [k, n].
    pub fn new(
        n: usize,
        queries: usize,
        target: Vec<f64>,
        shadows: usize,
        shadow: Vec<f64>,
        shadow_in: Vec<bool>,
        signal_kind: SignalKind,
    ) -> Result<Self> {
        if n == 0 || queries == 0 {
            return Err(MiaError::Shape {
                array: "target".into(),
                found: vec![n, queries],
                expected: "[n, q] with n >= 1 examples and q >= 1 queries".into(),
            });
        }
        check_len(
            "target",
            &[n, queries],
            target.len(),
            format!("[{n}, {queries}]"),
        )?;
        check_len(
            "shadow",
            &[shadows, n, queries],
            shadow.len(),
            format!("[k, n, q] = [{shadows}, {n}, {queries}]"),
        )?;
        check_len(
            "shadow_in",
            &[shadows, n],
            shadow_in.len(),
            format!("[k, n] = [{shadows}, {n}]"),
        )?;
        check_finite("target", &[n, queries], &target)?;
        check_finite("shadow", &[shadows, n, queries], &shadow)?;
        Ok(Self {
            n,
            queries,
            shadows,
            target,
            shadow,
            shadow_in,
            signal_kind,
            target_in: None,
            population: None,
            class: None,
            token_logprob: None,
            text: None,
        })
    }

    /// The target's true membership, `[n]`, for evaluation.
    pub fn with_target_in(mut self, target_in: Vec<bool>) -> Result<Self> {
        if target_in.len() != self.n {
            return Err(MiaError::Shape {
                array: "target_in".into(),
                found: vec![target_in.len()],
                expected: format!("[n] = [{}] (n from `target`)", self.n),
            });
        }
        self.target_in = Some(target_in);
        Ok(self)
    }

    /// Population points for RMIA: `population_target` [n_z, q], `population_shadow` [k, n_z, q].
    pub fn with_population(mut self, population: Population) -> Result<Self> {
        let (nz, q, k) = (population.n, self.queries, self.shadows);
        if nz == 0 || population.target.len() != nz * q {
            return Err(MiaError::Shape {
                array: "population_target".into(),
                found: vec![population.target.len() / q.max(1), q],
                expected: format!("[n_z, q] with n_z >= 1 and q = {q} (q from `target`)"),
            });
        }
        if population.shadow.len() != k * nz * q {
            return Err(MiaError::Shape {
                array: "population_shadow".into(),
                found: vec![population.shadow.len()],
                expected: format!("[k, n_z, q] = [{k}, {nz}, {q}] ({} values)", k * nz * q),
            });
        }
        check_finite("population_target", &[nz, q], &population.target)?;
        check_finite("population_shadow", &[k, nz, q], &population.shadow)?;
        self.population = Some(population);
        Ok(self)
    }

    /// Each example's class, `[n]`, for per-class results.
    pub fn with_class(mut self, class: Vec<i64>) -> Result<Self> {
        if class.len() != self.n {
            return Err(MiaError::Shape {
                array: "class".into(),
                found: vec![class.len()],
                expected: format!("[n] = [{}] (n from `target`)", self.n),
            });
        }
        self.class = Some(class);
        Ok(self)
    }

    /// The target's per-token log-probabilities of each example (LM baselines; any length per
    /// example, at least one token).
    pub fn with_token_logprob(mut self, token_logprob: Vec<Vec<f64>>) -> Result<Self> {
        if token_logprob.len() != self.n {
            return Err(MiaError::Shape {
                array: "token_logprob".into(),
                found: vec![token_logprob.len()],
                expected: format!("[n, L] with n = {} (n from `target`)", self.n),
            });
        }
        for (i, row) in token_logprob.iter().enumerate() {
            if row.is_empty() {
                return Err(MiaError::InvalidInput {
                    what: "array `token_logprob`".into(),
                    reason: format!("example {i} has no token (all padding)"),
                });
            }
            if let Some(t) = row.iter().position(|v| !v.is_finite() || *v > 0.0) {
                return Err(MiaError::InvalidInput {
                    what: "array `token_logprob`".into(),
                    reason: format!(
                        "example {i}, token {t}: {} is not a log-probability (finite, <= 0)",
                        row[t]
                    ),
                });
            }
        }
        self.token_logprob = Some(token_logprob);
        Ok(self)
    }

    /// Each example's text as bytes (the zlib baseline).
    pub fn with_text(mut self, text: Vec<Vec<u8>>) -> Result<Self> {
        if text.len() != self.n {
            return Err(MiaError::Shape {
                array: "text".into(),
                found: vec![text.len()],
                expected: format!("[n, L] with n = {} (n from `target`)", self.n),
            });
        }
        self.text = Some(text);
        Ok(self)
    }

    /// Number of examples n.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Number of queries per example q (query 0 is the identity).
    pub fn queries(&self) -> usize {
        self.queries
    }
    /// Number of shadow (reference) models k.
    pub fn shadows(&self) -> usize {
        self.shadows
    }
    /// What the signals mean.
    pub fn signal_kind(&self) -> SignalKind {
        self.signal_kind
    }
    /// The target's signal on example i, query j.
    pub fn target(&self, i: usize, j: usize) -> f64 {
        self.target[i * self.queries + j]
    }
    /// Shadow model m's signal on example i, query j.
    pub fn shadow(&self, m: usize, i: usize, j: usize) -> f64 {
        self.shadow[(m * self.n + i) * self.queries + j]
    }
    /// Whether shadow model m trained on example i.
    pub fn is_in(&self, m: usize, i: usize) -> bool {
        self.shadow_in[m * self.n + i]
    }
    /// The target's membership, when known.
    pub fn target_in(&self) -> Option<&[bool]> {
        self.target_in.as_deref()
    }
    /// Population points, when given.
    pub fn population(&self) -> Option<&Population> {
        self.population.as_ref()
    }
    /// Classes, when given.
    pub fn class(&self) -> Option<&[i64]> {
        self.class.as_deref()
    }
    /// Per-token log-probabilities, when given.
    pub fn token_logprob(&self) -> Option<&[Vec<f64>]> {
        self.token_logprob.as_deref()
    }
    /// Texts, when given.
    pub fn text(&self) -> Option<&[Vec<u8>]> {
        self.text.as_deref()
    }

    /// The first example without an IN (or OUT) shadow model, if any.
    pub fn first_uncovered(&self, want_in: bool) -> Option<usize> {
        (0..self.n).find(|&i| !(0..self.shadows).any(|m| self.is_in(m, i) == want_in))
    }

    /// The same examples, with shadow model `m` as the target and the other shadow models as
    /// references (its membership is `target_in`). RMIA tunes `a` on this; it is also the
    /// "leave one shadow out" evaluation when no target membership is known.
    pub fn leave_one_out(&self, m: usize) -> Result<Self> {
        let (n, q, k) = (self.n, self.queries, self.shadows);
        let target: Vec<f64> = self.shadow[m * n * q..(m + 1) * n * q].to_vec();
        let mut shadow = Vec::with_capacity((k - 1) * n * q);
        let mut shadow_in = Vec::with_capacity((k - 1) * n);
        for r in (0..k).filter(|&r| r != m) {
            shadow.extend_from_slice(&self.shadow[r * n * q..(r + 1) * n * q]);
            shadow_in.extend_from_slice(&self.shadow_in[r * n..(r + 1) * n]);
        }
        let mut set = ScoreSet::new(n, q, target, k - 1, shadow, shadow_in, self.signal_kind)?
            .with_target_in(self.shadow_in[m * n..(m + 1) * n].to_vec())?;
        if let Some(pop) = &self.population {
            let nz = pop.n;
            let mut pshadow = Vec::with_capacity((k - 1) * nz * q);
            for r in (0..k).filter(|&r| r != m) {
                pshadow.extend_from_slice(&pop.shadow[r * nz * q..(r + 1) * nz * q]);
            }
            set = set.with_population(Population {
                n: nz,
                target: pop.shadow[m * nz * q..(m + 1) * nz * q].to_vec(),
                shadow: pshadow,
            })?;
        }
        Ok(set)
    }

    /// Several targets' sets as one: their rows one after another (set 0's examples, then set
    /// 1's, ...), each row with its own target signal and its own shadow models' signals and
    /// IN flags in shadow slot m. This is the LiRA paper's evaluation over several target models
    /// (each scored against the other models, the scores pooled): it multiplies the
    /// non-members, so lower FPRs become reportable. Every set needs the same number of shadow
    /// models, queries and signal kind, and the extras (membership, classes, token
    /// log-probabilities, texts) on all sets or on none. Population points are dropped: RMIA's
    /// Pr(z | target) belongs to one target, so RMIA runs per set ([`super::run_pooled`]).
    pub fn stack(sets: &[ScoreSet]) -> Result<Self> {
        let first = sets.first().ok_or_else(|| MiaError::InvalidInput {
            what: "stacked score sets".into(),
            reason: "none given".into(),
        })?;
        let (k, q, kind) = (first.shadows, first.queries, first.signal_kind);
        for (s, set) in sets.iter().enumerate() {
            if set.shadows != k || set.queries != q || set.signal_kind != kind {
                return Err(MiaError::InvalidInput {
                    what: format!("stacked score set {s}"),
                    reason: format!(
                        "{} shadow models, {} queries, {} signal; set 0 has {k}, {q}, {}",
                        set.shadows,
                        set.queries,
                        set.signal_kind.name(),
                        kind.name()
                    ),
                });
            }
        }
        let n: usize = sets.iter().map(|s| s.n).sum();
        let target: Vec<f64> = sets.iter().flat_map(|s| s.target.iter().copied()).collect();
        let mut shadow = Vec::with_capacity(k * n * q);
        let mut shadow_in = Vec::with_capacity(k * n);
        for m in 0..k {
            for s in sets {
                shadow.extend_from_slice(&s.shadow[m * s.n * q..(m + 1) * s.n * q]);
                shadow_in.extend_from_slice(&s.shadow_in[m * s.n..(m + 1) * s.n]);
            }
        }
        let mut out = ScoreSet::new(n, q, target, k, shadow, shadow_in, kind)?;
        // An extra present on every set is stacked; on some but not all, it is an error.
        fn all_or_none<T: Clone>(
            sets: &[ScoreSet],
            what: &str,
            get: impl Fn(&ScoreSet) -> Option<&[T]>,
        ) -> Result<Option<Vec<T>>> {
            let present = sets.iter().filter(|s| get(s).is_some()).count();
            if present == 0 {
                return Ok(None);
            }
            if present < sets.len() {
                return Err(MiaError::InvalidInput {
                    what: format!("stacked score sets, array `{what}`"),
                    reason: format!("given on {present} of {} sets", sets.len()),
                });
            }
            Ok(Some(
                sets.iter()
                    .flat_map(|s| get(s).unwrap_or(&[]).iter().cloned())
                    .collect(),
            ))
        }
        if let Some(v) = all_or_none(sets, "target_in", |s| s.target_in())? {
            out = out.with_target_in(v)?;
        }
        if let Some(v) = all_or_none(sets, "class", |s| s.class())? {
            out = out.with_class(v)?;
        }
        if let Some(v) = all_or_none(sets, "token_logprob", |s| s.token_logprob())? {
            out = out.with_token_logprob(v)?;
        }
        if let Some(v) = all_or_none(sets, "text", |s| s.text())? {
            out = out.with_text(v)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_and_named() {
        let err = ScoreSet::new(
            2,
            1,
            vec![0.0; 2],
            3,
            vec![0.0; 5],
            vec![true; 6],
            SignalKind::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`shadow`") && msg.contains("[3, 2, 1]"),
            "{msg}"
        );
        let err = ScoreSet::new(
            2,
            1,
            vec![0.0, f64::NAN],
            1,
            vec![0.0; 2],
            vec![true; 2],
            SignalKind::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`target`") && err.to_string().contains("[1, 0]"));
    }

    #[test]
    fn leave_one_out_swaps_target_and_reference() {
        // k = 2, n = 2, q = 1: shadow 0 trained on example 0, shadow 1 on example 1.
        let set = ScoreSet::new(
            2,
            1,
            vec![9.0, 9.0],
            2,
            vec![1.0, 2.0, 3.0, 4.0],
            vec![true, false, false, true],
            SignalKind::default(),
        )
        .unwrap();
        let loo = set.leave_one_out(1).unwrap();
        assert_eq!(loo.shadows(), 1);
        assert_eq!((loo.target(0, 0), loo.target(1, 0)), (3.0, 4.0));
        assert_eq!(loo.target_in(), Some(&[false, true][..]));
        assert_eq!(loo.shadow(0, 1, 0), 2.0);
        assert!(loo.is_in(0, 0));
        assert_eq!(set.first_uncovered(true), None);
    }
}
