//! memaudit-attacks: Song, Ristenpart and Shmatikov's malicious-memorization attacks ("Machine
//! Learning Models that Remember Too Much", CCS 2017), their decoders and their metrics.
//!
//! | attack (paper name) | access | module | plugs into training as |
//! |---|---|---|---|
//! | LSB encoding | white box, post-processing | [`lsb`] | nothing: [`lsb::lsb_embed`] on the trained parameters |
//! | correlated value encoding | white box, malicious regulariser | [`correlation`] | [`correlation::CorrelationPenalty`] (a [`ParamPenalty`]) |
//! | sign encoding | white box, malicious regulariser | [`sign`] | [`sign::SignPenalty`] (a [`ParamPenalty`]) |
//! | capacity abuse | black box, synthetic data | [`capacity_abuse`] | extra labelled examples, [`capacity_abuse::SyntheticSet`] |
//!
//! Secrets ([`secret`]) are gray images or bag-of-words documents; [`selection`] is the authors'
//! rule for which weights carry a regulariser-encoded secret; [`metrics`] scores decodings (MAPE,
//! cosine, bits per parameter/query, word precision/recall, the mean-image baseline); [`grid`]
//! draws recovered images next to the originals. `docs/attacks.md` explains each attack's threat
//! model and what differential privacy can and cannot do about it.
//!
//! Parameters are the engine's flat `&[f32]`, described by [`ParamSpec`]s in network order.
//!
//! Dependencies and why:
//! - `memaudit-engine`: the [`ParamSpec`] layout and the [`ParamPenalty`] training hook.
//! - `flate2`: zlib compression of the LSB payload (the authors gzip theirs).
//! - `chacha20poly1305`: authenticated encryption of the LSB payload, so a wrong key is detected
//!   (the authors' AES-CBC is unauthenticated).
//! - `argon2`: Argon2id key derivation from an attacker passphrase.
//! - `postcard` (+ `serde`): compact serialization of the payload before compression.
//! - `rand`/`rand_chacha`: seeded nonces, salts and synthetic inputs (everything random takes a
//!   seed).
//! - `png`, `base64`: image grids as PNG and as SVG with the PNG embedded; reading a user's own PNG
//!   pictures as a secret ([`grid::decode_png_gray`]).
//! - `thiserror`: the typed [`AttackError`].

pub mod bits;
pub mod capacity_abuse;
pub mod correlation;
pub mod error;
pub mod grid;
pub mod lsb;
pub mod metrics;
pub mod secret;
pub mod selection;
pub mod sign;

pub use capacity_abuse::{
    CapacityAbuse, CapacityDecode, LabelScheme, SyntheticInputs, SyntheticSet,
};
pub use correlation::{
    CorrelationPenalty, CorrelationScores, decode_correlation_images, score_correlation_decoding,
};
pub use error::{AttackError, Result, ensure_fits};
pub use grid::{GrayImage, comparison_grid, decode_png_gray, encode_png, grid_svg};
pub use lsb::{
    AttackerKey, LsbConfig, LsbReport, lsb_capacity_bits, lsb_embed, lsb_extract, lsb_stream_bits,
    tensor_changes,
};
pub use memaudit_engine::params::ParamSpec;
pub use memaudit_engine::penalty::ParamPenalty;
pub use metrics::{ImageScores, PrecisionRecall};
pub use secret::{ImageSecret, Payload, TextDecode, TextSecret};
pub use selection::{ParamSelection, SelectionRule};
pub use sign::{SignPenalty, decode_sign_bits, decode_sign_images, decode_sign_text};
