//! [`Num`]: an `f64` whose non-finite values survive JSON.
//!
//! serde_json writes `f64::INFINITY` and NaN as `null`, which a script cannot tell from a missing
//! value, and cannot read them back. memaudit's convention (the CLI's `output` module, every
//! `--json` object and `run.json`) is to write them as the strings `"inf"`, `"-inf"` and `"nan"`,
//! and finite values as plain JSON numbers. Result types hold their floats as `Num` so that the
//! typed result serialised *is* the `--json` output.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An `f64` serialised as a number when finite and as `"inf"`, `"-inf"` or `"nan"` otherwise;
/// it deserialises from either form.
///
/// ```
/// use memaudit_experiments::Num;
/// assert_eq!(serde_json::to_string(&Num(f64::INFINITY)).unwrap(), r#""inf""#);
/// assert_eq!(serde_json::to_string(&Num(0.5)).unwrap(), "0.5");
/// let back: Num = serde_json::from_str(r#""-inf""#).unwrap();
/// assert_eq!(back.0, f64::NEG_INFINITY);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Num(pub f64);

impl Num {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl From<f64> for Num {
    fn from(x: f64) -> Self {
        Num(x)
    }
}

impl From<Num> for f64 {
    fn from(x: Num) -> Self {
        x.0
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if x.is_finite() {
            s.serialize_f64(x)
        } else if x.is_nan() {
            s.serialize_str("nan")
        } else if x > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a number, "inf", "-inf" or "nan""#)
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Num, E> {
                Ok(Num(x))
            }
            fn visit_i64<E: de::Error>(self, x: i64) -> Result<Num, E> {
                Ok(Num(x as f64))
            }
            fn visit_u64<E: de::Error>(self, x: u64) -> Result<Num, E> {
                Ok(Num(x as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Num, E> {
                match s {
                    "inf" | "+inf" => Ok(Num(f64::INFINITY)),
                    "-inf" => Ok(Num(f64::NEG_INFINITY)),
                    "nan" => Ok(Num(f64::NAN)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `Option<f64>` as `Option<Num>` (`None` stays `null`).
pub fn opt(x: Option<f64>) -> Option<Num> {
    x.map(Num)
}

/// A number in text: 4 decimals, scientific notation when very large or small, and inf/nan
/// spelt as in JSON (the one formatting of numbers in reports and in the privacy statement).
pub fn fmt(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) {
        format!("{x:.4e}")
    } else {
        format!("{x:.4}")
    }
}

/// Serde helper for an `f64` field: `#[serde(serialize_with = "crate::num::ser_f64")]` writes
/// it as [`Num`] does (inf and nan as strings).
pub fn ser_f64<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    Num(*x).serialize(s)
}

/// [`ser_f64`] for an `Option<f64>` (`None` as null).
pub fn ser_opt_f64<S: serde::Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    x.map(Num).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_strings_and_read_back() {
        for (x, text) in [
            (f64::INFINITY, r#""inf""#),
            (f64::NEG_INFINITY, r#""-inf""#),
            (1.25, "1.25"),
            (0.0, "0.0"),
        ] {
            let s = serde_json::to_string(&Num(x)).unwrap();
            assert_eq!(s, text);
            assert_eq!(serde_json::from_str::<Num>(&s).unwrap().0, x);
        }
        let nan = serde_json::to_string(&Num(f64::NAN)).unwrap();
        assert_eq!(nan, r#""nan""#);
        assert!(serde_json::from_str::<Num>(&nan).unwrap().0.is_nan());
        assert!(serde_json::from_str::<Num>(r#""infinity""#).is_err());
    }
}
