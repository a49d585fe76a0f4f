//! The PLD accountant (dp_accounting's `pld/pld_privacy_accountant.py`).

#[allow(unused_imports)]
use super::*;

/// The PLD accountant (add-or-remove-one neighbours).
#[derive(Clone, Debug)]
pub struct PldAccountant {
    pub(crate) relation: NeighboringRelation,
    pub(crate) options: PldOptions,
    pub(crate) factors: Vec<Factor>,
    pub(crate) non_private: bool,
    /// Composes the same events; its optimal order picks the tilt for tiny δ.
    pub(crate) rdp: RdpAccountant,
    pub(crate) plain: OnceLock<std::result::Result<Arc<ComposedPair>, AccountingError>>,
}

impl PldAccountant {
    /// An accountant with dp_accounting's default settings.
    pub fn new(relation: NeighboringRelation) -> Self {
        Self::with_options(relation, PldOptions::default()).expect("default options are valid")
    }

    /// An accountant with custom settings.
    pub fn with_options(relation: NeighboringRelation, options: PldOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self {
            relation,
            options,
            factors: Vec::new(),
            non_private: false,
            rdp: RdpAccountant::new(NeighboringRelation::AddOrRemoveOne),
            plain: OnceLock::new(),
        })
    }

    /// The settings.
    pub fn options(&self) -> &PldOptions {
        &self.options
    }

    pub(crate) fn factors_of(&self, event: &DpEvent) -> Result<Vec<Option<Factor>>> {
        let atoms = flatten(event, "PLD", self.relation)?;
        let unsupported = |reason: &str| AccountingError::Unsupported {
            accountant: "PLD",
            event: event.describe(),
            relation: self.relation,
            reason: reason.to_string(),
        };
        if self.relation != NeighboringRelation::AddOrRemoveOne && !atoms.is_empty() {
            return Err(unsupported(
                "the PLD accountant implements add-or-remove-one only; use the RDP accountant (SampledWithoutReplacement) for replace-one",
            ));
        }
        atoms
            .into_iter()
            .map(|(atom, count)| match atom {
                Atom::NonPrivate => Ok(None),
                Atom::Gaussian { sigma } => Ok(Some(Factor::Gaussian { sigma, count })),
                Atom::PoissonGaussian { q, sigma } => Ok(Some(Factor::Poisson { q, sigma, count })),
                Atom::WorGaussian { .. } => Err(unsupported(
                    "sampling without replacement has no PLD here; use the RDP accountant with replace-one neighbours",
                )),
            })
            .collect()
    }

    pub(crate) fn plain(&self) -> Result<Arc<ComposedPair>> {
        self.plain
            .get_or_init(|| compose_pair(&self.factors, &self.options, compose_plain).map(Arc::new))
            .clone()
    }

    pub(crate) fn total_steps(&self) -> f64 {
        self.factors
            .iter()
            .map(|f| f.steps() as f64)
            .sum::<f64>()
            .max(1.0)
    }

    /// Options and tilt of the recomposition aimed at δ-level `target`.
    pub(crate) fn tilted(&self, target: f64, lambda: f64) -> Result<ComposedPair> {
        let mut opts = self.options;
        let small = (target * 1e-3).max(f64::MIN_POSITIVE);
        opts.tail_mass_truncation = opts.tail_mass_truncation.min(small);
        opts.log_mass_truncation_bound = opts
            .log_mass_truncation_bound
            .min((small / self.total_steps()).ln());
        compose_pair(&self.factors, &opts, |f, a, o| {
            compose_tilted(f, a, o, lambda)
        })
    }

    /// When every factor is an unsampled Gaussian, the composition is one Gaussian mechanism
    /// with noise multiplier (Σ count/σ²)^(-1/2).
    pub(crate) fn gaussian_only_sigma(&self) -> Option<f64> {
        let mut inv_sq = 0.0;
        for f in &self.factors {
            match f {
                Factor::Gaussian { sigma, count } => inv_sq += *count as f64 / (sigma * sigma),
                Factor::Poisson { .. } => return None,
            }
        }
        (inv_sq > 0.0).then(|| inv_sq.powf(-0.5))
    }

    pub(crate) fn tilt_from_order(order: f64) -> f64 {
        (order - 1.0).clamp(0.0, 1000.0)
    }

    /// Epsilon for `delta` (the max over the add and remove PLDs).
    pub fn epsilon_for_delta(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        if self.non_private {
            return Ok(f64::INFINITY);
        }
        let d = self.options.value_discretization_interval;
        let plain = match (self.plain(), self.gaussian_only_sigma()) {
            (Err(AccountingError::PldTooLarge { .. }), Some(sigma)) => {
                return Ok(gaussian_epsilon_for_delta(sigma, delta));
            }
            (plain, _) => plain?,
        };
        let eps0 = plain
            .parts()
            .map(|c| epsilon_for_delta(&c.pmf, d, delta).0)
            .fold(0.0, f64::max);
        if delta >= TILT_DELTA_THRESHOLD || self.factors.is_empty() {
            return Ok(eps0);
        }
        let order = self
            .rdp
            .epsilon_and_order(delta, Conversion::Improved)?
            .order;
        let Ok(tilted) = self.tilted(delta, Self::tilt_from_order(order)) else {
            return Ok(eps0);
        };
        let mut eps1 = 0.0f64;
        for c in tilted.parts() {
            let (e, stop) = epsilon_for_delta(&c.pmf, d, delta);
            if stop < c.reliable_from || !e.is_finite() {
                return Ok(eps0);
            }
            eps1 = eps1.max(e);
        }
        Ok(eps1)
    }

    /// Delta for `epsilon` (the max over the add and remove PLDs).
    pub fn delta_for_epsilon(&self, epsilon: f64) -> Result<f64> {
        check_epsilon(epsilon)?;
        if self.non_private {
            return Ok(1.0);
        }
        let d = self.options.value_discretization_interval;
        let plain = match (self.plain(), self.gaussian_only_sigma()) {
            (Err(AccountingError::PldTooLarge { .. }), Some(sigma)) => {
                return Ok(gaussian_delta_for_epsilon(sigma, epsilon));
            }
            (plain, _) => plain?,
        };
        let delta0 = plain
            .parts()
            .map(|c| delta_for_epsilon(&c.pmf, d, epsilon).0)
            .fold(0.0, f64::max);
        if delta0 >= TILT_DELTA_THRESHOLD || self.factors.is_empty() {
            return Ok(delta0);
        }
        let order = self.rdp.delta_and_order(epsilon)?.order;
        let Ok(tilted) = self.tilted(delta0, Self::tilt_from_order(order)) else {
            return Ok(delta0);
        };
        let mut delta1 = 0.0f64;
        for c in tilted.parts() {
            let (v, first) = delta_for_epsilon(&c.pmf, d, epsilon);
            let last_index = c.pmf.probs.len();
            if first < c.reliable_from && first < last_index {
                return Ok(delta0);
            }
            delta1 = delta1.max(v);
        }
        Ok(delta1)
    }
}

impl PrivacyAccountant for PldAccountant {
    fn neighboring_relation(&self) -> NeighboringRelation {
        self.relation
    }

    fn check(&self, event: &DpEvent) -> Result<()> {
        self.factors_of(event).map(|_| ())
    }

    fn compose(&mut self, event: &DpEvent) -> Result<()> {
        let factors = self.factors_of(event)?;
        self.rdp.compose(event)?;
        for f in factors {
            match f {
                None => self.non_private = true,
                Some(f) => self.factors.push(f),
            }
        }
        self.plain = OnceLock::new();
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        self.epsilon_for_delta(delta)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        self.delta_for_epsilon(epsilon)
    }
}
