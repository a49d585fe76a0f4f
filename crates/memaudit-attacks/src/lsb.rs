//! LSB encoding (Song, Ristenpart, Shmatikov, "Machine Learning Models that Remember Too Much",
//! CCS 2017, attack A; the authors' `compress.py`, `mask_param.py`): after honest training, the
//! attacker's code overwrites the low `b` mantissa bits of every float parameter with a
//! compressed, optionally encrypted, copy of the training data.
//!
//! Stream layout (MSB-first bits, `b` bits per parameter, parameters in flat order, the first
//! bit of each parameter's chunk in its bit `b-1`, as the authors' zero-left-padded 32-bit words):
//!
//! ```text
//! u32 big-endian  envelope length L in bytes
//! envelope (L bytes):
//!   u8  format version (1)
//!   u8  flags: bit 0 = encrypted, bit 1 = key derived from a passphrase
//!   [16 bytes Argon2id salt]          if derived from a passphrase
//!   [12 bytes ChaCha20-Poly1305 nonce] if encrypted
//!   body: zlib(postcard(Payload)), encrypted with the header bytes as associated data and
//!         followed by the 16-byte Poly1305 tag if encrypted
//! zero bits up to n_params * b (every parameter's low bits are overwritten, as the authors do)
//! ```
//!
//! Deviations from the authors' code, on purpose: the payload is serialized raw pixels (or
//! documents), not a concatenation of PNG files, and compressed with zlib (PNG's own deflate, so
//! the sizes are comparable); AES-128-CBC under a fixed key and IV, whose padding is unauthenticated,
//! is replaced by ChaCha20-Poly1305 under the attacker's key, so a wrong key is detected; and a
//! length prefix makes decoding self-delimiting (the authors never wrote a decoder).

use argon2::Argon2;
use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use memaudit_engine::params::ParamSpec;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::io::{Read, Write};

use crate::error::{AttackError, Result, ensure_fits};
use crate::secret::Payload;

/// The largest `b`: a float32 has 23 mantissa bits (see [`AttackError::LsbBitsOutOfRange`]).
pub const LSB_MAX_BITS: u32 = 23;
const FORMAT_VERSION: u8 = 1;
const FLAG_ENCRYPTED: u8 = 1;
const FLAG_PASSPHRASE: u8 = 2;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const LENGTH_BITS: u64 = 32;
/// A decoded payload may not inflate past this (guards against a decompression bomb in a
/// tampered model).
const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// The attacker's key for the authenticated cipher.
#[derive(Clone)]
pub enum AttackerKey {
    /// A raw 256-bit key.
    Raw([u8; 32]),
    /// A passphrase, stretched with Argon2id (RFC 9106, default parameters of the `argon2`
    /// crate: 19 MiB, 2 passes) and a salt stored in the stream.
    Passphrase(String),
}

impl std::fmt::Debug for AttackerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print key material
        match self {
            AttackerKey::Raw(_) => f.write_str("AttackerKey::Raw(..)"),
            AttackerKey::Passphrase(_) => f.write_str("AttackerKey::Passphrase(..)"),
        }
    }
}

impl AttackerKey {
    /// Parses a 64-hex-digit (256-bit) key.
    pub fn from_hex(hex: &str) -> Result<Self> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(AttackerKey::hex_error(hex.len()));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| AttackerKey::hex_error(hex.len()))?;
        }
        Ok(AttackerKey::Raw(key))
    }

    fn hex_error(len: usize) -> AttackError {
        AttackError::InvalidKey(format!(
            "a hex key must be exactly 64 hexadecimal digits (256 bits), got {len} characters"
        ))
    }

    /// A passphrase key; it must not be empty.
    pub fn passphrase(passphrase: impl Into<String>) -> Result<Self> {
        let passphrase = passphrase.into();
        if passphrase.is_empty() {
            return Err(AttackError::InvalidKey("the passphrase is empty".into()));
        }
        Ok(AttackerKey::Passphrase(passphrase))
    }

    fn derive(&self, salt: Option<&[u8]>) -> Result<[u8; 32]> {
        match (self, salt) {
            (AttackerKey::Raw(key), _) => Ok(*key),
            (AttackerKey::Passphrase(p), Some(salt)) => {
                let mut key = [0u8; 32];
                Argon2::default()
                    .hash_password_into(p.as_bytes(), salt, &mut key)
                    .map_err(|e| {
                        AttackError::InvalidKey(format!("Argon2id key derivation failed: {e}"))
                    })?;
                Ok(key)
            }
            (AttackerKey::Passphrase(_), None) => Err(AttackError::InvalidKey(
                "the payload was encrypted under a raw key, but a passphrase was given".into(),
            )),
        }
    }
}

/// How to embed.
#[derive(Clone, Debug)]
pub struct LsbConfig {
    /// `b`, the low bits overwritten per parameter, in `1..=23`.
    pub bits_per_param: u32,
    /// Encrypt under this key (None: compressed only).
    pub key: Option<AttackerKey>,
    /// Seeds the nonce and salt. Reusing a seed with the same key for two different payloads
    /// reuses the nonce, which leaks their XOR: use one seed per embedded model.
    pub seed: u64,
}

impl LsbConfig {
    /// Plain (unencrypted) embedding with `b` bits per parameter.
    pub fn new(bits_per_param: u32) -> Self {
        LsbConfig {
            bits_per_param,
            key: None,
            seed: 0,
        }
    }
}

/// What an embedding wrote and how much it perturbed the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LsbReport {
    pub bits_per_param: u32,
    pub n_params: usize,
    /// `n_params * b`.
    pub capacity_bits: u64,
    /// Serialized payload, before compression.
    pub serialized_bytes: usize,
    /// After compression (and before encryption overhead).
    pub compressed_bytes: usize,
    /// Length prefix + envelope, in bits: what the secret actually occupies.
    pub stream_bits: u64,
    /// Parameters whose low bits hold part of the stream (the rest hold zero padding).
    pub params_carrying_stream: usize,
    /// Parameters whose value changed (bits already equal to the stream are unchanged).
    pub params_changed: usize,
    /// Largest `|new - old| / |old|` over parameters that are normal floats (nonzero, not
    /// subnormal). Bounded by `2^(b-23)`: the change stays inside the mantissa's low b bits.
    pub max_relative_change: f64,
    /// Largest `|new - old|` over all parameters.
    pub max_abs_change: f64,
    /// Zero or subnormal parameters that changed. Their relative change is unbounded (a zero
    /// becomes a subnormal) but the new value is below 2^-126 in magnitude.
    pub tiny_params_changed: usize,
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=LSB_MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(AttackError::LsbBitsOutOfRange { bits })
    }
}

/// Capacity of LSB encoding: `n_params * b` bits.
pub fn lsb_capacity_bits(n_params: usize, bits_per_param: u32) -> Result<u64> {
    check_bits(bits_per_param)?;
    Ok(n_params as u64 * u64::from(bits_per_param))
}

/// Builds the envelope bytes (without the length prefix).
fn seal(payload: &Payload, cfg: &LsbConfig) -> Result<(Vec<u8>, usize, usize)> {
    let serialized = payload.to_bytes()?;
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
    encoder
        .write_all(&serialized)
        .and_then(|_| encoder.flush())
        .map_err(|e| AttackError::CorruptPayload(format!("compression failed: {e}")))?;
    let compressed = encoder
        .finish()
        .map_err(|e| AttackError::CorruptPayload(format!("compression failed: {e}")))?;
    let mut envelope = vec![FORMAT_VERSION];
    let Some(key) = &cfg.key else {
        envelope.push(0);
        envelope.extend_from_slice(&compressed);
        return Ok((envelope, serialized.len(), compressed.len()));
    };
    let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut salt);
    rng.fill_bytes(&mut nonce);
    let passphrase = matches!(key, AttackerKey::Passphrase(_));
    envelope.push(FLAG_ENCRYPTED | if passphrase { FLAG_PASSPHRASE } else { 0 });
    if passphrase {
        envelope.extend_from_slice(&salt);
    }
    envelope.extend_from_slice(&nonce);
    let key_bytes = key.derive(Some(&salt))?;
    let cipher = ChaCha20Poly1305::new(&Key::from(key_bytes));
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            AeadPayload {
                msg: &compressed,
                aad: &envelope,
            },
        )
        .map_err(|_| {
            AttackError::CorruptPayload("encryption failed (payload too long for ChaCha20)".into())
        })?;
    envelope.extend_from_slice(&ciphertext);
    Ok((envelope, serialized.len(), compressed.len()))
}

/// The bits to embed for `payload` (length prefix + envelope), and the report's sizes.
fn payload_stream(payload: &Payload, cfg: &LsbConfig) -> Result<(Vec<bool>, usize, usize)> {
    let (envelope, serialized, compressed) = seal(payload, cfg)?;
    let len = u32::try_from(envelope.len()).map_err(|_| {
        AttackError::InvalidSecret(format!("payload of {} bytes exceeds 4 GiB", envelope.len()))
    })?;
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&envelope);
    Ok((crate::bits::bytes_to_bits(&bytes), serialized, compressed))
}

/// Length in bits of the stream [`lsb_embed`] would write for `payload` (length prefix and
/// envelope, after compression and encryption): what must fit in `n_params * b`. Lets a caller
/// check the capacity (or find how many images fit) before it has trained anything.
pub fn lsb_stream_bits(payload: &Payload, cfg: &LsbConfig) -> Result<u64> {
    Ok(payload_stream(payload, cfg)?.0.len() as u64)
}

/// Overwrites the low `b` bits of every parameter of `params` with the payload stream (then
/// zeros), and reports how much the model changed. Errors: `b` outside `1..=23`, a non-finite
/// parameter, a payload whose compressed stream exceeds `n_params * b` bits (says how many fit).
/// On error `params` is unchanged.
pub fn lsb_embed(params: &mut [f32], payload: &Payload, cfg: &LsbConfig) -> Result<LsbReport> {
    let b = cfg.bits_per_param;
    let capacity_bits = lsb_capacity_bits(params.len(), b)?;
    if let Some(index) = params.iter().position(|p| !p.is_finite()) {
        return Err(AttackError::NonFiniteParameter {
            index,
            value: params[index],
        });
    }
    let (stream, serialized_bytes, compressed_bytes) = payload_stream(payload, cfg)?;
    ensure_fits(
        stream.len() as u64,
        capacity_bits,
        "bits",
        format!(
            "{} parameters x {b} low bits (after compression{})",
            params.len(),
            if cfg.key.is_some() {
                " and encryption"
            } else {
                ""
            }
        ),
    )?;
    let mask: u32 = (1u32 << b) - 1;
    let mut report = LsbReport {
        bits_per_param: b,
        n_params: params.len(),
        capacity_bits,
        serialized_bytes,
        compressed_bytes,
        stream_bits: stream.len() as u64,
        params_carrying_stream: stream.len().div_ceil(b as usize),
        params_changed: 0,
        max_relative_change: 0.0,
        max_abs_change: 0.0,
        tiny_params_changed: 0,
    };
    for (i, p) in params.iter_mut().enumerate() {
        let start = i * b as usize;
        let chunk = stream
            .get(start..(start + b as usize).min(stream.len()))
            .unwrap_or(&[]);
        // chunk bits fill the low b bits MSB-first; a short last chunk is padded with zeros
        let low = chunk.iter().enumerate().fold(0u32, |acc, (k, &bit)| {
            acc | (u32::from(bit) << (b as usize - 1 - k))
        });
        let old = *p;
        let new = f32::from_bits((old.to_bits() & !mask) | low);
        if new.to_bits() != old.to_bits() {
            report.params_changed += 1;
            let diff = (f64::from(new) - f64::from(old)).abs();
            report.max_abs_change = report.max_abs_change.max(diff);
            if old.is_normal() {
                report.max_relative_change =
                    report.max_relative_change.max(diff / f64::from(old).abs());
            } else {
                report.tiny_params_changed += 1;
            }
        }
        *p = new;
    }
    Ok(report)
}

/// Reads the low `b` bits of `params`, MSB-first.
fn read_low_bits(params: &[f32], b: u32, n_bits: u64) -> Vec<bool> {
    let mut bits = Vec::with_capacity(n_bits as usize);
    'outer: for p in params {
        let word = p.to_bits();
        for shift in (0..b).rev() {
            if bits.len() as u64 == n_bits {
                break 'outer;
            }
            bits.push((word >> shift) & 1 == 1);
        }
    }
    bits
}

/// Recovers the payload embedded by [`lsb_embed`] with the same `b` (and key, if it was
/// encrypted; a key given for an unencrypted payload is not needed and ignored).
///
/// Errors: `b` outside `1..=23`; a length prefix that does not fit (no payload, or a different
/// `b`); [`AttackError::KeyRequired`]; [`AttackError::AuthenticationFailed`] for a wrong key or
/// modified parameters; [`AttackError::CorruptPayload`] when decompression or parsing fails.
pub fn lsb_extract(
    params: &[f32],
    bits_per_param: u32,
    key: Option<&AttackerKey>,
) -> Result<Payload> {
    let capacity = lsb_capacity_bits(params.len(), bits_per_param)?;
    if capacity < LENGTH_BITS {
        return Err(AttackError::CorruptPayload(format!(
            "{} parameters x {bits_per_param} bits cannot even hold the 32-bit length prefix",
            params.len()
        )));
    }
    let prefix = crate::bits::bits_to_bytes(&read_low_bits(params, bits_per_param, LENGTH_BITS));
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as u64;
    if LENGTH_BITS + 8 * len > capacity || len < 2 {
        return Err(AttackError::CorruptPayload(format!(
            "the length prefix says {len} bytes, which does not fit in the {capacity} low bits at b = {bits_per_param}: \
             no payload was embedded, or it was embedded with a different b"
        )));
    }
    let all = read_low_bits(params, bits_per_param, LENGTH_BITS + 8 * len);
    let envelope = crate::bits::bits_to_bytes(&all[LENGTH_BITS as usize..]);
    open(&envelope, key)
}

fn open(envelope: &[u8], key: Option<&AttackerKey>) -> Result<Payload> {
    let (version, flags) = (envelope[0], envelope[1]);
    if version != FORMAT_VERSION || flags & !(FLAG_ENCRYPTED | FLAG_PASSPHRASE) != 0 {
        return Err(AttackError::CorruptPayload(format!(
            "unknown format version {version} / flags {flags:#04x}: not a memaudit LSB payload, or a different b"
        )));
    }
    let compressed = if flags & FLAG_ENCRYPTED == 0 {
        envelope[2..].to_vec()
    } else {
        let key = key.ok_or(AttackError::KeyRequired)?;
        let salt_len = if flags & FLAG_PASSPHRASE != 0 {
            SALT_LEN
        } else {
            0
        };
        let header_len = 2 + salt_len + NONCE_LEN;
        if envelope.len() < header_len + TAG_LEN {
            return Err(AttackError::CorruptPayload(
                "encrypted envelope shorter than its header and tag".into(),
            ));
        }
        let salt = (salt_len > 0).then(|| &envelope[2..2 + SALT_LEN]);
        let key_bytes = match (key, salt) {
            (AttackerKey::Raw(_), Some(_)) => {
                return Err(AttackError::InvalidKey(
                    "the payload was encrypted under a passphrase, but a raw key was given".into(),
                ));
            }
            _ => key.derive(salt)?,
        };
        let nonce: [u8; NONCE_LEN] = envelope[2 + salt_len..header_len]
            .try_into()
            .expect("length checked");
        let cipher = ChaCha20Poly1305::new(&Key::from(key_bytes));
        cipher
            .decrypt(
                &Nonce::from(nonce),
                AeadPayload {
                    msg: &envelope[header_len..],
                    aad: &envelope[..header_len],
                },
            )
            .map_err(|_| AttackError::AuthenticationFailed)?
    };
    let mut serialized = Vec::new();
    ZlibDecoder::new(compressed.as_slice())
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut serialized)
        .map_err(|e| AttackError::CorruptPayload(format!("decompression failed: {e}")))?;
    if serialized.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(AttackError::CorruptPayload(format!(
            "the payload inflates past {MAX_DECOMPRESSED_BYTES} bytes; refusing it"
        )));
    }
    Payload::from_bytes(&serialized)
}

/// How one tensor changed between two parameter vectors (e.g. before and after [`lsb_embed`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorChange {
    pub name: String,
    pub len: usize,
    pub changed: usize,
    /// Over normal (nonzero, non-subnormal) original values; 0 when none changed.
    pub max_relative_change: f64,
}

/// Per-tensor summary of which parameters changed.
pub fn tensor_changes(
    specs: &[ParamSpec],
    before: &[f32],
    after: &[f32],
) -> Result<Vec<TensorChange>> {
    if before.len() != after.len() {
        return Err(AttackError::LengthMismatch {
            context: "parameter vectors to compare".into(),
            what: "parameters",
            expected: before.len(),
            found: after.len(),
        });
    }
    specs
        .iter()
        .map(|spec| {
            let range = spec.range();
            if range.end > before.len() {
                return Err(AttackError::InvalidLayout(format!(
                    "tensor {} spans {}..{} but the parameter vector has {} values",
                    spec.name,
                    range.start,
                    range.end,
                    before.len()
                )));
            }
            let mut change = TensorChange {
                name: spec.name.clone(),
                len: spec.len(),
                changed: 0,
                max_relative_change: 0.0,
            };
            for (&old, &new) in before[range.clone()].iter().zip(&after[range]) {
                if old.to_bits() != new.to_bits() {
                    change.changed += 1;
                    if old.is_normal() {
                        let rel = (f64::from(new) - f64::from(old)).abs() / f64::from(old).abs();
                        change.max_relative_change = change.max_relative_change.max(rel);
                    }
                }
            }
            Ok(change)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{ImageSecret, TextSecret};
    use crate::selection::tests::specs_from;
    use memaudit_engine::params::ParamKind;
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    fn random_params(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // He-init-like magnitudes, both signs
        (0..n).map(|_| rng.random_range(-0.2f32..0.2)).collect()
    }

    fn image_payload(n: usize, seed: u64) -> Payload {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // MNIST-like: mostly background, some strokes (so compression has something to do)
        let pixels = (0..n * 28 * 28)
            .map(|_| {
                if rng.random_bool(0.2) {
                    rng.random()
                } else {
                    0
                }
            })
            .collect();
        Payload::Images(ImageSecret::new(n, 28, 28, pixels).unwrap())
    }

    #[test]
    fn stream_bits_is_what_embedding_writes() {
        let payload = image_payload(3, 4);
        for key in [None, Some(AttackerKey::Raw([7; 32]))] {
            let cfg = LsbConfig {
                bits_per_param: 8,
                key,
                seed: 1,
            };
            let mut params = random_params(20_000, 2);
            let report = lsb_embed(&mut params, &payload, &cfg).unwrap();
            assert_eq!(lsb_stream_bits(&payload, &cfg).unwrap(), report.stream_bits);
        }
    }

    #[test]
    fn round_trip_is_exact_for_every_b() {
        let payload = image_payload(3, 1);
        for b in [1u32, 2, 8, 16, 20, 23] {
            let original = random_params(30_000, u64::from(b));
            let mut params = original.clone();
            let report = lsb_embed(&mut params, &payload, &LsbConfig::new(b)).unwrap();
            assert_eq!(lsb_extract(&params, b, None).unwrap(), payload, "b = {b}");
            assert!(report.compressed_bytes < report.serialized_bytes);
            assert_eq!(report.capacity_bits, 30_000 * u64::from(b));
            // the change stays inside the low b bits: relative change < 2^(b-23)
            let bound = 2f64.powi(b as i32 - 23);
            assert!(
                report.max_relative_change < bound,
                "b = {b}: {} >= {bound}",
                report.max_relative_change
            );
            assert!(
                report.max_relative_change > bound / 4.0,
                "b = {b}: the bound should be nearly reached"
            );
            // high bits untouched: sign and exponent and high mantissa identical
            let keep = !((1u32 << b) - 1);
            assert!(
                original
                    .iter()
                    .zip(&params)
                    .all(|(o, n)| o.to_bits() & keep == n.to_bits() & keep)
            );
            assert!(report.params_changed > report.params_carrying_stream / 2);
        }
    }

    #[test]
    fn encrypted_round_trips_and_wrong_keys_fail_the_tag() {
        let payload =
            Payload::Text(TextSecret::new(100_000, vec![vec![5, 99_999, 42], vec![7]]).unwrap());
        let raw = AttackerKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap();
        let pass = AttackerKey::passphrase("correct horse battery staple").unwrap();
        for key in [raw.clone(), pass.clone()] {
            let cfg = LsbConfig {
                bits_per_param: 12,
                key: Some(key.clone()),
                seed: 99,
            };
            let mut params = random_params(2_000, 3);
            lsb_embed(&mut params, &payload, &cfg).unwrap();
            assert_eq!(lsb_extract(&params, 12, Some(&key)).unwrap(), payload);
            assert!(matches!(
                lsb_extract(&params, 12, None),
                Err(AttackError::KeyRequired)
            ));
            let wrong = match key {
                AttackerKey::Raw(_) => AttackerKey::from_hex(&format!(
                    "{}0123456789abcdee",
                    "0123456789abcdef".repeat(3)
                ))
                .unwrap(),
                AttackerKey::Passphrase(_) => {
                    AttackerKey::passphrase("correct horse battery stapler").unwrap()
                }
            };
            assert!(matches!(
                lsb_extract(&params, 12, Some(&wrong)),
                Err(AttackError::AuthenticationFailed)
            ));
            // a single flipped low bit anywhere in the ciphertext is detected as well
            let mut tampered = params.clone();
            tampered[20] = f32::from_bits(tampered[20].to_bits() ^ 1);
            assert!(matches!(
                lsb_extract(&tampered, 12, Some(&key)),
                Err(AttackError::AuthenticationFailed)
            ));
        }
        // same seed and key: deterministic stream
        let cfg = LsbConfig {
            bits_per_param: 12,
            key: Some(raw.clone()),
            seed: 5,
        };
        let (mut a, mut b) = (random_params(2_000, 3), random_params(2_000, 3));
        lsb_embed(&mut a, &payload, &cfg).unwrap();
        lsb_embed(&mut b, &payload, &cfg).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_inputs_are_refused_with_the_numbers() {
        let payload = image_payload(2, 4);
        let mut params = random_params(1_000, 5);
        let before = params.clone();
        for b in [0u32, 24, 32] {
            let err = lsb_embed(&mut params, &payload, &LsbConfig::new(b)).unwrap_err();
            assert!(matches!(err, AttackError::LsbBitsOutOfRange { .. }));
            assert!(err.to_string().contains("exponent"), "{err}");
            assert!(matches!(
                lsb_extract(&params, b, None),
                Err(AttackError::LsbBitsOutOfRange { .. })
            ));
        }
        // 1,000 params x 1 bit cannot hold two 28x28 images even compressed
        let err = lsb_embed(&mut params, &payload, &LsbConfig::new(1)).unwrap_err();
        match &err {
            AttackError::SecretTooLarge {
                available: 1000,
                unit: "bits",
                needed,
                ..
            } => assert!(*needed > 1000),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("at most 1000 bits"), "{err}");
        params[7] = f32::INFINITY;
        assert!(matches!(
            lsb_embed(&mut params, &payload, &LsbConfig::new(16)),
            Err(AttackError::NonFiniteParameter { index: 7, .. })
        ));
        params[7] = before[7];
        assert_eq!(
            params, before,
            "failed embeddings leave the parameters alone"
        );
        // nothing embedded: the length prefix is garbage
        assert!(matches!(
            lsb_extract(&params, 16, None),
            Err(AttackError::CorruptPayload(_))
        ));
        // embedded with b = 16, read with b = 8
        lsb_embed(&mut params, &payload, &LsbConfig::new(16)).unwrap();
        assert!(lsb_extract(&params, 8, None).is_err());
        assert!(AttackerKey::from_hex("abcd").is_err());
        assert!(AttackerKey::from_hex(&"g".repeat(64)).is_err());
        assert!(AttackerKey::passphrase("").is_err());
        assert_eq!(
            format!("{:?}", AttackerKey::passphrase("secret").unwrap()),
            "AttackerKey::Passphrase(..)"
        );
    }

    #[test]
    fn zeros_and_per_tensor_changes_are_reported() {
        let specs = specs_from(&[
            ("w", &[4, 4], ParamKind::Weight),
            ("b", &[4], ParamKind::Bias),
        ]);
        let mut params = random_params(20, 8);
        params[17] = 0.0; // a zero bias gains low bits and becomes subnormal
        let before = params.clone();
        let payload = Payload::Bytes(vec![0xff; 8]);
        let report = lsb_embed(&mut params, &payload, &LsbConfig::new(23)).unwrap();
        assert_eq!(lsb_extract(&params, 23, None).unwrap(), payload);
        let changes = tensor_changes(&specs, &before, &params).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes.iter().map(|c| c.changed).sum::<usize>(),
            report.params_changed
        );
        assert!(changes.iter().all(|c| c.max_relative_change < 1.0));
        if params[17] != 0.0 {
            assert!(params[17].is_subnormal());
            assert_eq!(report.tiny_params_changed, 1);
        }
        assert!(tensor_changes(&specs, &before, &params[..19]).is_err());
    }
}
