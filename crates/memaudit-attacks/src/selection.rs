//! Which parameters the malicious regularisers (correlated value and sign encoding) write to.
//!
//! Song et al.'s code (`attack.py::set_params_init`, `corr_term`, `sign_term`) concatenates the
//! flattened parameters with `ndim > 1` (weights and kernels; no biases or normalisation
//! scales) in network order, and encodes the secret into the first
//! `ℓ = min(len(secret), Σ sizes of the first 60 such tensors)` values. A secret that ends inside
//! a tensor uses a prefix of that tensor (the code sets `offset = len(values)` there), so ℓ is
//! *not* rounded down to whole tensors.
//!
//! memaudit is stricter about capacity than the authors' script, which silently drops the tail of
//! a secret that is too long: [`ParamSelection::select`] refuses a secret longer than the capacity
//! and says how much fits.

use std::ops::Range;

use memaudit_engine::params::{ParamSpec, total_len};

use crate::error::{AttackError, Result, ensure_fits};

/// Song et al.'s cap on the number of weight tensors that carry a secret.
pub const AUTHORS_MAX_TENSORS: usize = 60;

/// The selection rule: tensors with at least `min_ndim` dimensions, in the order of the spec
/// list (the engine lists specs in network order), at most `max_tensors` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectionRule {
    pub min_ndim: usize,
    pub max_tensors: usize,
}

impl Default for SelectionRule {
    /// The authors' rule: `ndim > 1`, the first 60 tensors.
    fn default() -> Self {
        SelectionRule {
            min_ndim: 2,
            max_tensors: AUTHORS_MAX_TENSORS,
        }
    }
}

impl SelectionRule {
    /// The eligible tensors, in order, capped at `max_tensors`.
    pub fn eligible<'a>(&self, specs: &'a [ParamSpec]) -> impl Iterator<Item = &'a ParamSpec> {
        let min_ndim = self.min_ndim;
        specs
            .iter()
            .filter(move |s| s.shape.len() >= min_ndim)
            .take(self.max_tensors)
    }

    /// How many values the rule can carry: the total size of the eligible tensors.
    pub fn capacity(&self, specs: &[ParamSpec]) -> usize {
        self.eligible(specs).map(ParamSpec::len).sum()
    }
}

/// One selected tensor (or its prefix) and where it sits in the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedTensor {
    pub name: String,
    /// Flat indices carrying secret values `secret_range`.
    pub range: Range<usize>,
    /// Positions in the secret that this tensor carries.
    pub secret_range: Range<usize>,
}

/// The ℓ parameter indices carrying a secret, in secret order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSelection {
    tensors: Vec<SelectedTensor>,
    len: usize,
    capacity: usize,
    /// One past the largest flat index used, to check parameter vectors against.
    params_needed: usize,
}

impl ParamSelection {
    /// Selects the parameters for a secret of `secret_len` values (pixels for correlated value
    /// encoding, bits for sign encoding; `unit` names them in errors) with Song et al.'s rule
    /// (see the module docs).
    ///
    /// Errors: the specs overlap or are empty-shaped inconsistently, no tensor is eligible, or
    /// `secret_len` exceeds the capacity (the error says how many values fit).
    pub fn select(
        specs: &[ParamSpec],
        secret_len: usize,
        unit: &'static str,
        rule: SelectionRule,
    ) -> Result<Self> {
        check_specs(specs)?;
        let capacity = rule.capacity(specs);
        if capacity == 0 {
            return Err(AttackError::InvalidLayout(format!(
                "no parameter tensor has at least {} dimensions, so there is nothing to encode the secret into",
                rule.min_ndim
            )));
        }
        if secret_len == 0 {
            return Err(AttackError::InvalidSecret("the secret is empty".into()));
        }
        ensure_fits(
            secret_len as u64,
            capacity as u64,
            unit,
            format!(
                "the first {} parameter tensors with ndim >= {} (one secret value per parameter)",
                rule.max_tensors, rule.min_ndim
            ),
        )?;
        let mut tensors = Vec::new();
        let mut taken = 0;
        for spec in rule.eligible(specs) {
            if taken == secret_len {
                break;
            }
            let n = spec.len().min(secret_len - taken);
            if n == 0 {
                continue;
            }
            tensors.push(SelectedTensor {
                name: spec.name.clone(),
                range: spec.offset..spec.offset + n,
                secret_range: taken..taken + n,
            });
            taken += n;
        }
        let params_needed = tensors.iter().map(|t| t.range.end).max().unwrap_or(0);
        Ok(ParamSelection {
            tensors,
            len: taken,
            capacity,
            params_needed,
        })
    }

    /// ℓ, the number of parameters (and secret values) used.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The rule's capacity for these specs (values).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn tensors(&self) -> &[SelectedTensor] {
        &self.tensors
    }
    /// Flat parameter indices in secret order.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.tensors.iter().flat_map(|t| t.range.clone())
    }
    /// The selected values, in secret order.
    pub fn gather(&self, params: &[f32]) -> Result<Vec<f32>> {
        self.check_params(params.len())?;
        let mut out = Vec::with_capacity(self.len);
        for t in &self.tensors {
            out.extend_from_slice(&params[t.range.clone()]);
        }
        Ok(out)
    }
    /// A penalty over the selected values, evaluated in f64: gathers them, calls
    /// `f(theta, local_grad)`, adds the local gradient back into `grad` at the selected
    /// indices, and returns the value. Shared by the regulariser attacks' `ParamPenalty` impls.
    ///
    /// Panics if `params` or `grad` is shorter than the selection needs: the engine passes the
    /// vector its own specs describe, so a mismatch is a wiring bug, not user input.
    pub fn penalty_f64(
        &self,
        params: &[f32],
        grad: &mut [f32],
        f: impl FnOnce(&[f64], &mut [f64]) -> f64,
    ) -> f64 {
        assert!(
            grad.len() >= params.len(),
            "gradient shorter than the parameters"
        );
        let theta: Vec<f64> = self
            .gather(params)
            .expect("penalty built for a larger parameter vector")
            .into_iter()
            .map(f64::from)
            .collect();
        let mut local = vec![0.0f64; theta.len()];
        let value = f(&theta, &mut local);
        for (index, g) in self.indices().zip(&local) {
            grad[index] += *g as f32;
        }
        value
    }
    /// Errors unless a parameter vector of `n` floats covers every selected index.
    pub fn check_params(&self, n: usize) -> Result<()> {
        if n < self.params_needed {
            return Err(AttackError::LengthMismatch {
                context: "parameter vector for the encoding's selected tensors".into(),
                what: "parameters (at least)",
                expected: self.params_needed,
                found: n,
            });
        }
        Ok(())
    }
}

/// Checks that the specs tile disjoint ranges (two tensors writing one float would corrupt both).
fn check_specs(specs: &[ParamSpec]) -> Result<()> {
    let mut ranges: Vec<(Range<usize>, &str)> =
        specs.iter().map(|s| (s.range(), s.name.as_str())).collect();
    ranges.sort_by_key(|(r, _)| r.start);
    for pair in ranges.windows(2) {
        let ((a, an), (b, bn)) = (&pair[0], &pair[1]);
        if !a.is_empty() && !b.is_empty() && a.end > b.start {
            return Err(AttackError::InvalidLayout(format!(
                "parameter tensors {an} ({}..{}) and {bn} ({}..{}) overlap",
                a.start, a.end, b.start, b.end
            )));
        }
    }
    debug_assert!(total_len(specs) >= ranges.last().map_or(0, |(r, _)| r.end));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use memaudit_engine::params::ParamKind;

    /// Builds specs laid out back to back.
    pub(crate) fn specs_from(shapes: &[(&str, &[usize], ParamKind)]) -> Vec<ParamSpec> {
        let mut offset = 0;
        shapes
            .iter()
            .enumerate()
            .map(|(layer, (name, shape, kind))| {
                let spec = ParamSpec {
                    name: name.to_string(),
                    shape: shape.to_vec(),
                    offset,
                    kind: *kind,
                    layer,
                };
                offset += spec.len();
                spec
            })
            .collect()
    }

    /// The authors' ResNet-32 (Lasagne CIFAR-10 recipe, n = 5, projection shortcuts option B):
    /// convs without bias, each followed by batch norm (beta, gamma), a dense 64 -> 10 layer.
    pub(crate) fn resnet32_specs() -> Vec<ParamSpec> {
        use ParamKind::*;
        let mut shapes: Vec<(String, Vec<usize>, ParamKind)> = Vec::new();
        let mut conv = |name: String, out: usize, inp: usize, k: usize| {
            shapes.push((format!("{name}.w"), vec![out, inp, k, k], Weight));
            shapes.push((format!("{name}.bn.beta"), vec![out], NormShift));
            shapes.push((format!("{name}.bn.gamma"), vec![out], NormScale));
        };
        conv("conv0".into(), 16, 3, 3);
        let mut inp = 16;
        for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
            for block in 0..5 {
                let name = format!("stage{stage}.block{block}");
                conv(format!("{name}.conv1"), width, inp, 3);
                conv(format!("{name}.conv2"), width, width, 3);
                if inp != width {
                    conv(format!("{name}.proj"), width, inp, 1);
                }
                inp = width;
            }
        }
        shapes.push(("dense.w".into(), vec![64, 10], Weight));
        shapes.push(("dense.b".into(), vec![10], Bias));
        let refs: Vec<(&str, &[usize], ParamKind)> = shapes
            .iter()
            .map(|(n, s, k)| (n.as_str(), s.as_slice(), *k))
            .collect();
        specs_from(&refs)
    }

    #[test]
    fn resnet32_capacities_match_the_authors_arithmetic() {
        // papers.md §1.6 [V-calc from net.py]: 466,906 trainable parameters, 34 tensors with
        // ndim > 1 holding 464,432 weights.
        let specs = resnet32_specs();
        assert_eq!(total_len(&specs), 466_906);
        let rule = SelectionRule::default();
        assert_eq!(rule.eligible(&specs).count(), 34);
        assert_eq!(rule.capacity(&specs), 464_432);

        // Sign encoding, authors' k = 466906 // 1024 // 8 = 56 images of 32x32: 458,752 bits.
        let sign = ParamSelection::select(&specs, 56 * 1024 * 8, "bits", rule).unwrap();
        assert_eq!(sign.len(), 458_752);
        // the secret ends inside a tensor: its prefix is used (set_params_init's offset rule)
        let last = sign.tensors().last().unwrap();
        let full: usize = specs.iter().find(|s| s.name == last.name).unwrap().len();
        assert!(
            last.range.len() < full,
            "last tensor {} should be cut",
            last.name
        );
        // biases and batch-norm parameters are never selected
        assert!(sign.tensors().iter().all(|t| t.name.ends_with(".w")));
        // the selected indices skip the batch-norm parameters between the kernels
        let idx: Vec<usize> = sign.indices().take(433).collect();
        assert_eq!(idx[431], 431);
        assert_eq!(
            idx[432],
            432 + 32,
            "after conv0's 432 weights come 32 BN values"
        );

        // Correlated value encoding: all 464,432 weights hold 453 whole 32x32 images.
        let cap_images = rule.capacity(&specs) / 1024;
        assert_eq!(cap_images, 453);
        let corr = ParamSelection::select(&specs, cap_images * 1024, "values", rule).unwrap();
        assert_eq!(corr.len(), 463_872);
    }

    #[test]
    fn at_most_sixty_tensors_and_too_large_secrets_are_refused() {
        use ParamKind::*;
        let mut shapes: Vec<(String, Vec<usize>, ParamKind)> = Vec::new();
        for i in 0..70 {
            shapes.push((format!("l{i}.w"), vec![2, 5], Weight));
            shapes.push((format!("l{i}.b"), vec![2], Bias));
        }
        let refs: Vec<(&str, &[usize], ParamKind)> = shapes
            .iter()
            .map(|(n, s, k)| (n.as_str(), s.as_slice(), *k))
            .collect();
        let specs = specs_from(&refs);
        let rule = SelectionRule::default();
        assert_eq!(rule.capacity(&specs), 600);
        let all = ParamSelection::select(&specs, 600, "bits", rule).unwrap();
        assert_eq!(all.tensors().len(), 60);
        assert_eq!(all.tensors().last().unwrap().name, "l59.w");
        let err = ParamSelection::select(&specs, 601, "bits", rule).unwrap_err();
        match &err {
            AttackError::SecretTooLarge {
                needed: 601,
                available: 600,
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("at most 600 bits"), "{err}");
        let wider = SelectionRule {
            min_ndim: 2,
            max_tensors: 70,
        };
        assert_eq!(wider.capacity(&specs), 700);
        let prefix = ParamSelection::select(&specs, 13, "bits", rule).unwrap();
        assert_eq!(
            prefix.indices().collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]
        );
        assert!(prefix.gather(&[0.0; 14]).is_err());
        assert_eq!(
            prefix
                .gather(&(0..15).map(|i| i as f32).collect::<Vec<_>>())
                .unwrap()[10],
            12.0
        );
    }

    #[test]
    fn layouts_without_weights_or_with_overlaps_are_refused() {
        let specs = specs_from(&[("b", &[4], ParamKind::Bias)]);
        assert!(matches!(
            ParamSelection::select(&specs, 1, "bits", SelectionRule::default()),
            Err(AttackError::InvalidLayout(_))
        ));
        let mut specs = specs_from(&[
            ("a", &[2, 2], ParamKind::Weight),
            ("b", &[2, 2], ParamKind::Weight),
        ]);
        specs[1].offset = 3;
        assert!(matches!(
            ParamSelection::select(&specs, 1, "bits", SelectionRule::default()),
            Err(AttackError::InvalidLayout(_))
        ));
    }
}
