//! Parameter penalties added to the training objective.
//!
//! The engine calls a penalty once per optimizer step with the flat parameter vector; the
//! penalty adds its gradient to the step's gradient (after DP noise: a penalty that depends only
//! on the parameters and on data outside the training set is post-processing for DP, which is
//! exactly why the malicious regularisers of Song et al. are invisible to the DP guarantee).

/// A differentiable function of the parameters added to the loss.
pub trait ParamPenalty: Send + Sync {
    /// Short name, used in logs and metrics.
    fn name(&self) -> &str;
    /// Return the penalty at `params` and add its gradient into `grad` (same layout as `params`).
    fn value_and_grad(&self, params: &[f32], grad: &mut [f32]) -> f64;
}
