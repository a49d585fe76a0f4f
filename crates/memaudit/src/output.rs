//! The output conventions every subcommand follows.
//!
//! - `--json`: exactly one JSON object on stdout at the end; progress and warnings go to stderr.
//! - Non-finite numbers are written as the strings `"inf"`, `"-inf"` and `"nan"` (serde_json
//!   would silently write `null`, which a script cannot tell from a missing value).
//! - Errors: one line on stderr (or `{"error": "..."}` on stdout with `--json`), exit code 2.

use serde_json::Value;

/// A finite float as a JSON number; a non-finite one as a string.
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    } else if x.is_nan() {
        Value::String("nan".into())
    } else if x > 0.0 {
        Value::String("inf".into())
    } else {
        Value::String("-inf".into())
    }
}

/// `num` for an optional value (`None` becomes `null`).
pub fn opt_num(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

/// What a subcommand hands back: the human-readable text and the JSON object.
pub struct Report {
    pub text: String,
    pub json: Value,
}

impl Report {
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Self {
            text: text.into(),
            json,
        }
    }
}

/// Format a float for people: full precision is in the JSON.
pub fn fmt_f64(x: f64) -> String {
    memaudit_experiments::num::fmt(x)
}

/// A number the user gave, as given (the shortest form that reads back the same), in
/// scientific notation when very large or small: Rust writes 1e300 with 300 digits otherwise.
pub fn fmt_given(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A computed number to 6 significant digits after the point, scientific when very large or
/// small (so a noise multiplier of 2e-6 does not print as 0.000002).
pub fn fmt_f64_6(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-3..1e6).contains(&x.abs()) {
        format!("{x:.6e}")
    } else {
        format!("{x:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_numbers_are_strings() {
        assert_eq!(num(f64::INFINITY), Value::String("inf".into()));
        assert_eq!(num(f64::NEG_INFINITY), Value::String("-inf".into()));
        assert_eq!(num(f64::NAN), Value::String("nan".into()));
        assert_eq!(num(1.5), serde_json::json!(1.5));
    }

    #[test]
    fn huge_and_tiny_numbers_print_in_scientific_notation() {
        assert_eq!(fmt_given(1e300), "1e300");
        assert_eq!(fmt_given(1.1), "1.1");
        assert_eq!(fmt_given(0.0), "0");
        assert_eq!(fmt_f64_6(1.9073486328125e-6), "1.907349e-6");
        assert_eq!(fmt_f64_6(0.5), "0.500000");
    }
}
