//! Typed errors of the attacks crate. Every message names the offending value and what to do.

use thiserror::Error;

/// Everything that can go wrong when encoding, embedding or decoding a secret.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AttackError {
    /// The secret does not fit in the carrier (parameters, sign bits, synthetic queries).
    #[error(
        "secret needs {needed} {unit} but {carrier} holds only {available} {unit}; \
         shrink the secret to at most {available} {unit} (fewer images or documents) or use a larger carrier"
    )]
    SecretTooLarge {
        needed: u64,
        available: u64,
        /// "bits", or "values" where one parameter carries one secret value (a pixel).
        unit: &'static str,
        carrier: String,
    },
    /// LSB encoding asked to overwrite bits outside a float32's mantissa.
    #[error(
        "LSB encoding: b = {bits} bits per parameter is outside 1..=23. A float32 keeps its \
         mantissa in bits 0..=22, its exponent in bits 23..=30 and its sign in bit 31: overwriting \
         more than 23 low bits changes the exponent (scaling a weight by up to 2^127, or making it \
         infinite or NaN) or flips its sign, which destroys the model instead of hiding data in it. \
         Pick b in 1..=23 (Song et al. report accuracy holding up to about b = 20)"
    )]
    LsbBitsOutOfRange { bits: u32 },
    /// A penalty weight that is negative or not finite.
    #[error(
        "{penalty}: lambda = {lambda} is invalid; the penalty weight must be a finite number >= 0 \
         (0 disables the attack)"
    )]
    InvalidLambda { penalty: &'static str, lambda: f64 },
    /// Two image sets that must have the same image size do not.
    #[error(
        "{context}: image size mismatch, expected {expected_height}x{expected_width} pixels but got \
         {found_height}x{found_width}; resize or select images of one size"
    )]
    ImageSizeMismatch {
        context: String,
        expected_height: usize,
        expected_width: usize,
        found_height: usize,
        found_width: usize,
    },
    /// A slice or count that must match another does not.
    #[error("{context}: expected {expected} {what}, got {found}")]
    LengthMismatch {
        context: String,
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// A secret that cannot be encoded as given (empty, bad word index, constant values...).
    #[error("invalid secret: {0}")]
    InvalidSecret(String),
    /// The attacker key could not be parsed or derived.
    #[error("invalid attacker key: {0}")]
    InvalidKey(String),
    /// The authenticated cipher rejected the embedded payload.
    #[error(
        "LSB decoding: authentication failed, the payload's Poly1305 tag does not verify; the \
         attacker key is wrong, or the parameters changed after embedding (e.g. further training \
         or a different b)"
    )]
    AuthenticationFailed,
    /// The embedded payload is encrypted but no key was given.
    #[error(
        "LSB decoding: the embedded payload is encrypted; pass the attacker key used to embed it"
    )]
    KeyRequired,
    /// The bit stream read back is not a payload this crate wrote.
    #[error("corrupt payload: {0}")]
    CorruptPayload(String),
    /// LSB embedding met a NaN or infinite parameter.
    #[error(
        "LSB encoding: parameter {index} is {value}; overwriting the mantissa of an infinity or NaN \
         gives NaN or infinity, so the model must have finite parameters (retrain it)"
    )]
    NonFiniteParameter { index: usize, value: f32 },
    /// Capacity abuse configured with a label count it cannot use.
    #[error("capacity abuse with {classes} classes: {reason}")]
    InvalidClasses { classes: usize, reason: String },
    /// Parameter specs inconsistent with the parameter vector.
    #[error("invalid parameter layout: {0}")]
    InvalidLayout(String),
    /// PNG encoding failed.
    #[error("image grid: {0}")]
    Image(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, AttackError>;

/// Checks a penalty weight: finite and `>= 0`.
pub(crate) fn check_lambda(penalty: &'static str, lambda: f64) -> Result<()> {
    if lambda.is_finite() && lambda >= 0.0 {
        Ok(())
    } else {
        Err(AttackError::InvalidLambda { penalty, lambda })
    }
}

/// Fails with [`AttackError::SecretTooLarge`] when `needed > available` (counted in `unit`).
pub fn ensure_fits(
    needed: u64,
    available: u64,
    unit: &'static str,
    carrier: impl Into<String>,
) -> Result<()> {
    if needed > available {
        Err(AttackError::SecretTooLarge {
            needed,
            available,
            unit,
            carrier: carrier.into(),
        })
    } else {
        Ok(())
    }
}
