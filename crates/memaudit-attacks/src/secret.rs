//! The secrets an attacker smuggles out: gray images and bag-of-words documents.
//!
//! Both convert to MSB-first bit streams (what sign encoding and capacity abuse carry) and
//! serialize into a [`Payload`] (what LSB encoding compresses and hides).

use serde::{Deserialize, Serialize};

use crate::bits::{bits_to_bytes, bytes_to_bits, push_uint, read_uint, width_for};
use crate::error::{AttackError, Result};

/// `n` gray images of `height x width` u8 pixels, row-major, image after image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ImageSecretFields")]
pub struct ImageSecret {
    n: usize,
    height: usize,
    width: usize,
    pixels: Vec<u8>,
}

/// The serialized form, validated on the way in (a decoded payload is untrusted input).
#[derive(Deserialize)]
struct ImageSecretFields {
    n: usize,
    height: usize,
    width: usize,
    pixels: Vec<u8>,
}

impl TryFrom<ImageSecretFields> for ImageSecret {
    type Error = AttackError;
    fn try_from(f: ImageSecretFields) -> Result<Self> {
        ImageSecret::new(f.n, f.height, f.width, f.pixels)
    }
}

impl ImageSecret {
    /// Checks that `pixels` holds exactly `n * height * width` values and that the sizes are
    /// positive.
    pub fn new(n: usize, height: usize, width: usize, pixels: Vec<u8>) -> Result<Self> {
        if n == 0 || height == 0 || width == 0 {
            return Err(AttackError::InvalidSecret(format!(
                "an image secret needs at least one image of at least 1x1 pixels, got {n} images of {height}x{width}"
            )));
        }
        let expected = n
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .ok_or_else(|| {
                AttackError::InvalidSecret(format!(
                    "{n} images of {height}x{width} pixels overflow usize"
                ))
            })?;
        if pixels.len() != expected {
            return Err(AttackError::LengthMismatch {
                context: format!("image secret of {n} images of {height}x{width}"),
                what: "pixels",
                expected,
                found: pixels.len(),
            });
        }
        Ok(ImageSecret {
            n,
            height,
            width,
            pixels,
        })
    }

    /// Builds a secret from separate images, all of `height x width`.
    pub fn from_images(height: usize, width: usize, images: &[&[u8]]) -> Result<Self> {
        let mut pixels = Vec::with_capacity(images.len() * height * width);
        for (i, image) in images.iter().enumerate() {
            if image.len() != height * width {
                return Err(AttackError::LengthMismatch {
                    context: format!("image {i} of a {height}x{width} secret"),
                    what: "pixels",
                    expected: height * width,
                    found: image.len(),
                });
            }
            pixels.extend_from_slice(image);
        }
        ImageSecret::new(images.len(), height, width, pixels)
    }

    pub fn n_images(&self) -> usize {
        self.n
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn width(&self) -> usize {
        self.width
    }
    /// Pixels per image, `height * width`.
    pub fn image_len(&self) -> usize {
        self.height * self.width
    }
    /// All pixels, image after image, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }
    /// The pixels of image `i` (`i < n_images`).
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.pixels[i * len..(i + 1) * len]
    }
    /// The first `k` images (`1 <= k <= n_images`).
    pub fn first(&self, k: usize) -> Result<ImageSecret> {
        if k == 0 || k > self.n {
            return Err(AttackError::InvalidSecret(format!(
                "asked for the first {k} images of a secret holding {}",
                self.n
            )));
        }
        ImageSecret::new(
            k,
            self.height,
            self.width,
            self.pixels[..k * self.image_len()].to_vec(),
        )
    }
    /// Bits in the raw secret: 8 per pixel.
    pub fn bit_len(&self) -> u64 {
        self.pixels.len() as u64 * 8
    }
    /// The pixels as bits, MSB-first (the authors' `get_binary_secret` before the 0 -> -1 map).
    pub fn to_bits(&self) -> Vec<bool> {
        bytes_to_bits(&self.pixels)
    }
    /// Inverse of [`ImageSecret::to_bits`]: exactly `n * height * width * 8` bits.
    pub fn from_bits(n: usize, height: usize, width: usize, bits: &[bool]) -> Result<Self> {
        let expected = n * height * width * 8;
        if bits.len() != expected {
            return Err(AttackError::LengthMismatch {
                context: format!("bits of {n} images of {height}x{width}"),
                what: "bits",
                expected,
                found: bits.len(),
            });
        }
        ImageSecret::new(n, height, width, bits_to_bytes(bits))
    }
    /// Pixels as `f64` values 0..=255 (what correlated value encoding correlates with).
    pub fn values(&self) -> Vec<f64> {
        self.pixels.iter().map(|&p| f64::from(p)).collect()
    }
    /// Errors unless `other` has the same image size.
    pub fn check_same_size(&self, other: &ImageSecret, context: &str) -> Result<()> {
        if self.height != other.height || self.width != other.width {
            return Err(AttackError::ImageSizeMismatch {
                context: context.to_string(),
                expected_height: self.height,
                expected_width: self.width,
                found_height: other.height,
                found_width: other.width,
            });
        }
        Ok(())
    }
}

/// Documents of a bag-of-words model as word indices into a vocabulary of `vocab_size` words
/// (the IMDB logistic regression uses 10^5 features).
///
/// Bit layout ([`TextSecret::to_bits`]): every word is a fixed-width index of
/// [`TextSecret::index_width`] bits, MSB-first; each document ends with the end-of-document code
/// `vocab_size` (one more code than the vocabulary, which is why the width covers
/// `0..=vocab_size`). Fixed width keeps a flipped bit local to one word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TextSecretFields")]
pub struct TextSecret {
    vocab_size: u32,
    docs: Vec<Vec<u32>>,
}

#[derive(Deserialize)]
struct TextSecretFields {
    vocab_size: u32,
    docs: Vec<Vec<u32>>,
}

impl TryFrom<TextSecretFields> for TextSecret {
    type Error = AttackError;
    fn try_from(f: TextSecretFields) -> Result<Self> {
        TextSecret::new(f.vocab_size, f.docs)
    }
}

/// What [`TextSecret::from_bits`] read: the documents and how many codes were not words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextDecode {
    pub secret: TextSecret,
    /// Codes above `vocab_size` (corrupted bits), skipped.
    pub invalid_codes: usize,
    /// Whether the last document had no end marker (the stream was cut or corrupted).
    pub truncated: bool,
}

impl TextSecret {
    /// Checks that every index is `< vocab_size` and `vocab_size < u32::MAX` (one code is kept
    /// for the end-of-document marker).
    pub fn new(vocab_size: u32, docs: Vec<Vec<u32>>) -> Result<Self> {
        if vocab_size == 0 || vocab_size == u32::MAX {
            return Err(AttackError::InvalidSecret(format!(
                "vocabulary size {vocab_size} must be in 1..{}",
                u32::MAX
            )));
        }
        for (d, doc) in docs.iter().enumerate() {
            if let Some((pos, &index)) = doc.iter().enumerate().find(|&(_, &w)| w >= vocab_size) {
                return Err(AttackError::InvalidSecret(format!(
                    "document {d}, word {pos}: index {index} is outside the vocabulary 0..{vocab_size}"
                )));
            }
        }
        Ok(TextSecret { vocab_size, docs })
    }
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }
    pub fn docs(&self) -> &[Vec<u32>] {
        &self.docs
    }
    /// Total number of word occurrences.
    pub fn n_words(&self) -> usize {
        self.docs.iter().map(Vec::len).sum()
    }
    /// Bits per word index: enough for `0..=vocab_size` (17 for 10^5 words).
    pub fn index_width(&self) -> u32 {
        width_for(u64::from(self.vocab_size) + 1)
    }
    /// The same documents with each document's words sorted and deduplicated: what a
    /// bag-of-words (presence) model sees, and fewer bits to smuggle.
    pub fn unique_words(&self) -> TextSecret {
        let docs = self
            .docs
            .iter()
            .map(|doc| {
                let mut words = doc.clone();
                words.sort_unstable();
                words.dedup();
                words
            })
            .collect();
        TextSecret {
            vocab_size: self.vocab_size,
            docs,
        }
    }
    /// Length of [`TextSecret::to_bits`].
    pub fn bit_len(&self) -> u64 {
        (self.n_words() + self.docs.len()) as u64 * u64::from(self.index_width())
    }
    /// Fixed-width word indices, each document closed by the end marker `vocab_size`.
    pub fn to_bits(&self) -> Vec<bool> {
        let width = self.index_width();
        let mut bits = Vec::with_capacity(self.bit_len() as usize);
        for doc in &self.docs {
            for &word in doc {
                push_uint(&mut bits, u64::from(word), width);
            }
            push_uint(&mut bits, u64::from(self.vocab_size), width);
        }
        bits
    }
    /// Reads documents back from a (possibly corrupted) bit stream. Codes above `vocab_size`
    /// are skipped and counted; a trailing partial code is ignored; words after the last end
    /// marker form a last, truncated document.
    pub fn from_bits(vocab_size: u32, bits: &[bool]) -> Result<TextDecode> {
        let empty = TextSecret::new(vocab_size, Vec::new())?;
        let width = empty.index_width() as usize;
        let mut docs = Vec::new();
        let mut current = Vec::new();
        let mut invalid_codes = 0;
        for chunk in bits.chunks_exact(width) {
            let code = read_uint(chunk);
            match code.cmp(&u64::from(vocab_size)) {
                std::cmp::Ordering::Less => current.push(code as u32),
                std::cmp::Ordering::Equal => docs.push(std::mem::take(&mut current)),
                std::cmp::Ordering::Greater => invalid_codes += 1,
            }
        }
        let truncated = !current.is_empty();
        if truncated {
            docs.push(current);
        }
        Ok(TextDecode {
            secret: TextSecret { vocab_size, docs },
            invalid_codes,
            truncated,
        })
    }
}

/// What LSB encoding serializes, compresses and hides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Images(ImageSecret),
    Text(TextSecret),
    /// Arbitrary bytes (e.g. a CSV of records).
    Bytes(Vec<u8>),
}

impl Payload {
    /// Serialized form (postcard: compact, length-prefixed, versionable through the enum tag).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self)
            .map_err(|e| AttackError::CorruptPayload(format!("cannot serialize: {e}")))
    }
    /// Parses [`Payload::to_bytes`] output, validating the secrets inside.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (payload, rest) = postcard::take_from_bytes::<Payload>(bytes).map_err(|e| {
            AttackError::CorruptPayload(format!("cannot parse the decompressed payload: {e}"))
        })?;
        if !rest.is_empty() {
            return Err(AttackError::CorruptPayload(format!(
                "{} trailing bytes after the payload",
                rest.len()
            )));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_bits_round_trip_and_validation() {
        let secret = ImageSecret::new(2, 2, 3, (0..12).map(|i| (i * 21) as u8).collect()).unwrap();
        let bits = secret.to_bits();
        assert_eq!(bits.len() as u64, secret.bit_len());
        assert_eq!(ImageSecret::from_bits(2, 2, 3, &bits).unwrap(), secret);
        assert_eq!(secret.image(1), &[126, 147, 168, 189, 210, 231]);
        assert!(matches!(
            ImageSecret::new(2, 2, 3, vec![0; 11]),
            Err(AttackError::LengthMismatch {
                expected: 12,
                found: 11,
                ..
            })
        ));
        assert!(ImageSecret::new(0, 2, 3, vec![]).is_err());
        assert!(ImageSecret::from_bits(2, 2, 3, &bits[1..]).is_err());
        let other = ImageSecret::new(1, 3, 2, vec![0; 6]).unwrap();
        let err = secret.check_same_size(&other, "test").unwrap_err();
        assert!(
            err.to_string().contains("expected 2x3 pixels but got 3x2"),
            "{err}"
        );
    }

    #[test]
    fn text_bits_layout_is_fixed_width_with_end_markers() {
        let text = TextSecret::new(5, vec![vec![4, 0], vec![], vec![2]]).unwrap();
        // codes 0..=5 need 3 bits; stream: 4 0 END | END | 2 END
        assert_eq!(text.index_width(), 3);
        let bits = text.to_bits();
        assert_eq!(bits.len() as u64, text.bit_len());
        let codes: Vec<u64> = bits.chunks(3).map(read_uint).collect();
        assert_eq!(codes, vec![4, 0, 5, 5, 2, 5]);
        let decoded = TextSecret::from_bits(5, &bits).unwrap();
        assert_eq!(decoded.secret, text);
        assert_eq!((decoded.invalid_codes, decoded.truncated), (0, false));
        assert!(
            TextSecret::new(5, vec![vec![5]])
                .unwrap_err()
                .to_string()
                .contains("index 5")
        );
    }

    #[test]
    fn text_decoding_skips_invalid_codes() {
        // 3-bit codes: 1, 7 (invalid), 2, END(5), 3 (no end marker)
        let mut bits = Vec::new();
        for code in [1u64, 7, 2, 5, 3] {
            push_uint(&mut bits, code, 3);
        }
        bits.push(true); // a trailing partial code is ignored
        let decoded = TextSecret::from_bits(5, &bits).unwrap();
        assert_eq!(decoded.secret.docs(), &[vec![1, 2], vec![3]]);
        assert_eq!((decoded.invalid_codes, decoded.truncated), (1, true));
    }

    #[test]
    fn payload_round_trip_and_validation() {
        let payload = Payload::Text(TextSecret::new(100_000, vec![vec![99_999, 7, 7]]).unwrap());
        let bytes = payload.to_bytes().unwrap();
        assert_eq!(Payload::from_bytes(&bytes).unwrap(), payload);
        // a tampered image secret (pixel count no longer n*h*w) is rejected, not trusted
        let images = Payload::Images(ImageSecret::new(1, 1, 2, vec![3, 4]).unwrap());
        let mut bytes = images.to_bytes().unwrap();
        // layout: tag, n, height, width, len, pixels...; claim 2 images
        bytes[1] = 2;
        assert!(Payload::from_bytes(&bytes).is_err());
    }
}
