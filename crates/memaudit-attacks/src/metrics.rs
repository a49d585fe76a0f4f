//! Decoding-quality metrics of Song et al.: mean absolute pixel error (the paper's "MAPE", on the
//! 0-255 scale), cosine similarity, bits per parameter and per query, word precision and recall,
//! and the mean-image baseline (what guessing the average image scores).

use serde::Serialize;

use crate::error::{AttackError, Result};
use crate::secret::{ImageSecret, TextSecret};

fn check_len(a: usize, b: usize, context: &str) -> Result<()> {
    if a != b {
        return Err(AttackError::LengthMismatch {
            context: context.to_string(),
            what: "pixels",
            expected: a,
            found: b,
        });
    }
    if a == 0 {
        return Err(AttackError::InvalidSecret(format!(
            "{context}: no pixels to compare"
        )));
    }
    Ok(())
}

/// Mean absolute pixel error on the 0-255 scale ("MAPE" in Song et al.; lower is better).
pub fn mape(original: &[u8], recovered: &[u8]) -> Result<f64> {
    check_len(original.len(), recovered.len(), "MAPE")?;
    let total: u64 = original
        .iter()
        .zip(recovered)
        .map(|(&a, &b)| u64::from(a.abs_diff(b)))
        .sum();
    Ok(total as f64 / original.len() as f64)
}

/// |cosine similarity| of two images as raw 0-255 vectors (the authors' `image_metrics`). An
/// all-black image has no direction: its similarity is defined as 0.
pub fn abs_cosine(original: &[u8], recovered: &[u8]) -> Result<f64> {
    check_len(original.len(), recovered.len(), "cosine similarity")?;
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in original.iter().zip(recovered) {
        let (a, b) = (f64::from(a), f64::from(b));
        dot += a * b;
        na += a * a;
        nb += b * b;
    }
    if na == 0.0 || nb == 0.0 {
        return Ok(0.0);
    }
    Ok((dot / (na.sqrt() * nb.sqrt())).abs())
}

/// Per-image and mean scores of recovered images against the originals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageScores {
    pub mape: Vec<f64>,
    pub cosine: Vec<f64>,
    pub mean_mape: f64,
    pub mean_cosine: f64,
}

/// Scores image `i` of `recovered` against image `i` of `originals`. Both must hold the same
/// number of images of the same size (use [`ImageSecret::first`] to compare a prefix).
pub fn score_images(originals: &ImageSecret, recovered: &ImageSecret) -> Result<ImageScores> {
    originals.check_same_size(recovered, "scoring recovered images")?;
    if originals.n_images() != recovered.n_images() {
        return Err(AttackError::LengthMismatch {
            context: "scoring recovered images against the originals".into(),
            what: "images",
            expected: originals.n_images(),
            found: recovered.n_images(),
        });
    }
    let n = originals.n_images();
    let mut scores = ImageScores {
        mape: Vec::with_capacity(n),
        cosine: Vec::with_capacity(n),
        mean_mape: 0.0,
        mean_cosine: 0.0,
    };
    for i in 0..n {
        scores
            .mape
            .push(mape(originals.image(i), recovered.image(i))?);
        scores
            .cosine
            .push(abs_cosine(originals.image(i), recovered.image(i))?);
    }
    scores.mean_mape = scores.mape.iter().sum::<f64>() / n as f64;
    scores.mean_cosine = scores.cosine.iter().sum::<f64>() / n as f64;
    Ok(scores)
}

/// The pixel-wise mean of a set of images (e.g. the whole training set).
pub fn mean_image(images: &ImageSecret) -> Vec<f64> {
    let len = images.image_len();
    let mut mean = vec![0.0f64; len];
    for i in 0..images.n_images() {
        for (m, &p) in mean.iter_mut().zip(images.image(i)) {
            *m += f64::from(p);
        }
    }
    let n = images.n_images() as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

/// The mean-image baseline: MAPE of guessing `mean_image(reference)` for every target image.
/// A decoder is only informative if it beats this (for MNIST it is far below the 127.5 of a
/// uniform guess, because most pixels are background).
pub fn mean_image_baseline_mape(reference: &ImageSecret, targets: &ImageSecret) -> Result<f64> {
    reference.check_same_size(targets, "mean-image baseline")?;
    let mean = mean_image(reference);
    let total: f64 = targets
        .pixels()
        .chunks(targets.image_len())
        .flat_map(|image| {
            image
                .iter()
                .zip(&mean)
                .map(|(&p, &m)| (f64::from(p) - m).abs())
        })
        .sum();
    Ok(total / targets.pixels().len() as f64)
}

/// The per-pixel median of a set of images (the lower median for an even count).
pub fn median_image(images: &ImageSecret) -> Vec<u8> {
    let len = images.image_len();
    // 256-bin histograms per pixel: exact, and linear in the number of images
    let mut counts = vec![[0u32; 256]; len];
    for i in 0..images.n_images() {
        for (c, &p) in counts.iter_mut().zip(images.image(i)) {
            c[p as usize] += 1;
        }
    }
    let rank = (images.n_images() as u32).saturating_sub(1) / 2;
    counts
        .iter()
        .map(|c| {
            let mut seen = 0u32;
            (0..=255u8)
                .find(|&v| {
                    seen += c[v as usize];
                    seen > rank
                })
                .unwrap_or(255)
        })
        .collect()
}

/// The median-image baseline: MAPE of guessing `median_image(reference)` for every target
/// image. A constant minimises the mean absolute error at a median, so this is the best guess
/// that ignores the model. On MNIST, whose pixels are mostly black, it is nearly all black and
/// beats the mean-image guess: a decoder that outputs black images already scores below the
/// mean-image baseline, which is why reports show this one too.
pub fn median_image_baseline_mape(reference: &ImageSecret, targets: &ImageSecret) -> Result<f64> {
    reference.check_same_size(targets, "median-image baseline")?;
    let median = median_image(reference);
    let total: u64 = targets
        .pixels()
        .chunks(targets.image_len())
        .flat_map(|image| {
            image
                .iter()
                .zip(&median)
                .map(|(&p, &m)| u64::from(p.abs_diff(m)))
        })
        .sum();
    Ok(total as f64 / targets.pixels().len() as f64)
}

/// Secret bits carried per model parameter.
pub fn bits_per_parameter(secret_bits: u64, n_params: usize) -> f64 {
    if n_params == 0 {
        0.0
    } else {
        secret_bits as f64 / n_params as f64
    }
}

/// Secret bits recovered per query to the model.
pub fn bits_per_query(secret_bits: u64, queries: usize) -> f64 {
    if queries == 0 {
        0.0
    } else {
        secret_bits as f64 / queries as f64
    }
}

/// Word-level precision and recall of recovered documents.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PrecisionRecall {
    /// Recovered words that are in the original document / all recovered words.
    pub precision: f64,
    /// Original words that were recovered / all original words.
    pub recall: f64,
    pub true_positives: usize,
    pub recovered_words: usize,
    pub original_words: usize,
}

/// Precision and recall of recovered words, micro-averaged over documents: document `d` of
/// `recovered` is compared with document `d` of `original` as *sets* of word indices (a
/// bag-of-words presence model cannot tell more). Missing recovered documents count as empty;
/// extra recovered documents count as false positives. With nothing recovered, precision is 1
/// by convention (no wrong words) and recall 0.
pub fn word_precision_recall(original: &TextSecret, recovered: &TextSecret) -> PrecisionRecall {
    let original = original.unique_words();
    let recovered = recovered.unique_words();
    let (mut tp, mut n_rec, mut n_orig) = (0usize, 0usize, 0usize);
    let n_docs = original.docs().len().max(recovered.docs().len());
    for d in 0..n_docs {
        let orig = original.docs().get(d).map_or(&[][..], Vec::as_slice);
        let rec = recovered.docs().get(d).map_or(&[][..], Vec::as_slice);
        n_orig += orig.len();
        n_rec += rec.len();
        // both sorted and deduplicated
        tp += rec.iter().filter(|w| orig.binary_search(w).is_ok()).count();
    }
    PrecisionRecall {
        precision: if n_rec == 0 {
            1.0
        } else {
            tp as f64 / n_rec as f64
        },
        recall: if n_orig == 0 {
            1.0
        } else {
            tp as f64 / n_orig as f64
        },
        true_positives: tp,
        recovered_words: n_rec,
        original_words: n_orig,
    }
}

/// Corpus-level precision and recall: each document is reduced to its set of words, and the
/// multisets of (word, occurrence in some document) are compared, `tp = Σ_w min(#original
/// documents containing w, #recovered documents containing w)`. Unlike
/// [`word_precision_recall`] it does not care which document a word landed in, so a corrupted
/// end-of-document marker (which shifts every later document) costs only the words it touches.
/// It is never below the document-aligned score.
pub fn corpus_word_precision_recall(
    original: &TextSecret,
    recovered: &TextSecret,
) -> PrecisionRecall {
    fn document_frequencies(text: &TextSecret) -> std::collections::HashMap<u32, usize> {
        let mut counts = std::collections::HashMap::new();
        for doc in text.unique_words().docs() {
            for &w in doc {
                *counts.entry(w).or_insert(0) += 1;
            }
        }
        counts
    }
    let orig = document_frequencies(original);
    let rec = document_frequencies(recovered);
    let tp: usize = rec
        .iter()
        .map(|(w, &c)| c.min(orig.get(w).copied().unwrap_or(0)))
        .sum();
    let n_rec: usize = rec.values().sum();
    let n_orig: usize = orig.values().sum();
    PrecisionRecall {
        precision: if n_rec == 0 {
            1.0
        } else {
            tp as f64 / n_rec as f64
        },
        recall: if n_orig == 0 {
            1.0
        } else {
            tp as f64 / n_orig as f64
        },
        true_positives: tp,
        recovered_words: n_rec,
        original_words: n_orig,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mape_and_cosine_on_hand_computed_images() {
        // |10-13| + |200-190| + |0-0| + |255-251| = 17, over 4 pixels
        assert_eq!(mape(&[10, 200, 0, 255], &[13, 190, 0, 251]).unwrap(), 4.25);
        // (3,4) . (4,3) = 24, norms 5 and 5
        assert!((abs_cosine(&[3, 4], &[4, 3]).unwrap() - 0.96).abs() < 1e-15);
        assert_eq!(abs_cosine(&[0, 0], &[4, 3]).unwrap(), 0.0);
        assert!(mape(&[1, 2], &[1]).is_err());
        assert!(mape(&[], &[]).is_err());
    }

    #[test]
    fn median_image_baseline_is_the_best_constant_guess() {
        // pixel 0 over 4 images: 0, 0, 10, 250 (lower median 0); pixel 1: 5, 6, 7, 8 (6)
        let reference = ImageSecret::new(4, 1, 2, vec![0, 5, 0, 6, 10, 7, 250, 8]).unwrap();
        assert_eq!(median_image(&reference), vec![0, 6]);
        // |0-0| + |5-6| + |0-0| + |6-6| + |10-0| + |7-6| + |250-0| + |8-6| = 264 over 8 pixels
        let m = median_image_baseline_mape(&reference, &reference).unwrap();
        assert_eq!(m, 33.0);
        // the mean image (65, 6.5) does worse under absolute error on this skewed pixel
        assert!(mean_image_baseline_mape(&reference, &reference).unwrap() > m);
        // brute force: no constant image does better than the median
        for a in 0..=255u8 {
            for b in [5u8, 6, 7, 8] {
                let guess: u64 = [[0u8, 5], [0, 6], [10, 7], [250, 8]]
                    .iter()
                    .map(|p| u64::from(p[0].abs_diff(a)) + u64::from(p[1].abs_diff(b)))
                    .sum();
                assert!(guess as f64 / 8.0 >= m);
            }
        }
        let other = ImageSecret::new(1, 2, 1, vec![0, 0]).unwrap();
        assert!(matches!(
            median_image_baseline_mape(&reference, &other),
            Err(AttackError::ImageSizeMismatch { .. })
        ));
    }

    #[test]
    fn image_scores_and_mean_image_baseline() {
        let originals = ImageSecret::new(2, 1, 2, vec![0, 100, 200, 50]).unwrap();
        let recovered = ImageSecret::new(2, 1, 2, vec![0, 90, 200, 60]).unwrap();
        let scores = score_images(&originals, &recovered).unwrap();
        assert_eq!(scores.mape, vec![5.0, 5.0]);
        assert_eq!(scores.mean_mape, 5.0);
        // mean image = (100, 75): |0-100|+|100-75|+|200-100|+|50-75| = 250 over 4 pixels
        assert_eq!(mean_image(&originals), vec![100.0, 75.0]);
        assert_eq!(
            mean_image_baseline_mape(&originals, &originals).unwrap(),
            62.5
        );
        let wrong = ImageSecret::new(1, 2, 1, vec![0, 0]).unwrap();
        assert!(matches!(
            score_images(&originals, &wrong),
            Err(AttackError::ImageSizeMismatch { .. })
        ));
        assert!(matches!(
            mean_image_baseline_mape(&originals, &wrong),
            Err(AttackError::ImageSizeMismatch { .. })
        ));
        assert!(score_images(&originals, &originals.first(1).unwrap()).is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(bits_per_parameter(458_752, 466_906), 458_752.0 / 466_906.0);
        assert_eq!(bits_per_query(4, 2), 2.0);
        assert_eq!(bits_per_query(4, 0), 0.0);
    }

    #[test]
    fn precision_recall_on_hand_computed_documents() {
        let original = TextSecret::new(10, vec![vec![1, 2, 3, 3], vec![4, 5]]).unwrap();
        // doc 0: {1,2,9} vs {1,2,3}: 2 hits; doc 1: {} vs {4,5}; extra doc 2: {7}
        let recovered = TextSecret::new(10, vec![vec![2, 1, 9], vec![], vec![7]]).unwrap();
        let pr = word_precision_recall(&original, &recovered);
        assert_eq!(
            (pr.true_positives, pr.recovered_words, pr.original_words),
            (2, 4, 5)
        );
        assert_eq!(pr.precision, 0.5);
        assert_eq!(pr.recall, 0.4);
        let perfect = word_precision_recall(&original, &original);
        assert_eq!((perfect.precision, perfect.recall), (1.0, 1.0));
        // corpus level: original doc frequencies {1,2,3,4,5: 1 each}, recovered {1,2,9,7: 1 each}
        let corpus = corpus_word_precision_recall(&original, &recovered);
        assert_eq!(
            (
                corpus.true_positives,
                corpus.recovered_words,
                corpus.original_words
            ),
            (2, 4, 5)
        );
        // shifting documents (a lost end marker) ruins alignment but not the corpus score
        let shifted = TextSecret::new(10, vec![vec![], vec![1, 2, 3], vec![4, 5]]).unwrap();
        assert_eq!(word_precision_recall(&original, &shifted).true_positives, 0);
        let corpus = corpus_word_precision_recall(&original, &shifted);
        assert_eq!((corpus.precision, corpus.recall), (1.0, 1.0));
    }
}
