//! Checks on the real, fetched datasets against published or independently computed numbers.
//! They need `memaudit data fetch` first, so they are ignored by default:
//! `cargo run --release -- data fetch && cargo test --release -p memaudit-data -- --ignored`
//! (the cache is `$MEMAUDIT_DATA`, else `data/` at the repository root).

use memaudit_data::{
    DataCache, LmWindows, Split, TextVectorizer, Tokenizer, VectorizerOptions, WordVocabOptions,
    read_idx,
};

fn cache() -> DataCache {
    DataCache::default()
}

#[test]
#[ignore = "needs `memaudit data fetch`"]
fn ptb_matches_mikolov_counts() {
    let ptb = cache().ptb().unwrap();
    let tok = Tokenizer::word_from_text(&ptb.train, &WordVocabOptions::default()).unwrap();
    // The PTB LM vocabulary is 10,000 words including <unk> and <eos> (Mikolov et al. 2010).
    assert_eq!(tok.len(), 10_000);
    // Token counts with <eos> (as in Zaremba et al.'s reader): 929,589 / 73,760 / 82,430.
    let n = |s: &str| tok.encode(s).unwrap().len();
    assert_eq!(
        (n(&ptb.train), n(&ptb.valid), n(&ptb.test)),
        (929_589, 73_760, 82_430)
    );
    // valid and test hold no word outside the train vocabulary (PTB's <unk> preprocessing).
    assert!(tok.split(&ptb.valid).iter().all(|t| tok.id(t).is_some()));
    let windows = LmWindows::new(tok.encode(&ptb.train).unwrap(), 35).unwrap();
    assert_eq!(windows.len(), (929_589 - 1) / 35);
}

#[test]
#[ignore = "needs `memaudit data fetch`"]
fn mnist_matches_its_usual_statistics() {
    let train = cache().mnist(Split::Train).unwrap();
    let test = cache().mnist(Split::Test).unwrap();
    assert_eq!(
        (train.n, train.height, train.width, test.n),
        (60_000, 28, 28, 10_000)
    );
    // torchvision's usual Normalize((0.1307,), (0.3081,)).
    let (m, s) = train.mean_std();
    assert!(
        (m - 0.1307).abs() < 1e-4 && (s - 0.3081).abs() < 1e-4,
        "{m} {s}"
    );
    let mut counts = [0usize; 10];
    train.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(
        counts,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
}

#[test]
#[ignore = "needs `memaudit data fetch`"]
fn fashion_mnist_from_gzipped_idx() {
    let train = cache().fashion_mnist(Split::Train).unwrap();
    assert_eq!((train.n, train.height, train.width), (60_000, 28, 28));
    assert!(train.labels.iter().filter(|&&l| l == 3).count() == 6_000);
    let (m, s) = train.mean_std();
    assert!(
        (m - 0.2860).abs() < 1e-4 && (s - 0.3530).abs() < 1e-4,
        "{m} {s}"
    );
    // The MD5 of the decompressed training images that datasets.md gives.
    let dir = cache().dataset_dir("fashion-mnist");
    let idx = read_idx(&dir.join("train-images-idx3-ubyte.gz")).unwrap();
    let mut raw = memaudit_data::idx::encode_idx(&idx.dims, &[]);
    raw.extend_from_slice(&idx.data);
    assert_eq!(
        memaudit_data::md5_hex(&raw),
        "f4a8712d7a061bf5bd6d2ca38dc4d50a"
    );
}

#[test]
#[ignore = "needs `memaudit data fetch`"]
fn imdb_reviews() {
    let r = cache().imdb().unwrap();
    assert_eq!(r.len(), 33_530);
    assert_eq!(r.iter().filter(|x| x.source == "imdb").count(), 25_000);
    assert_eq!(r.iter().filter(|x| x.label == 1).count(), 16_765);
    assert!(r[0].text.starts_with("I rented I AM CURIOUS-YELLOW"));
    let texts: Vec<&str> = r.iter().map(|x| x.text.as_str()).collect();
    let v = TextVectorizer::fit(
        &texts[..2000],
        VectorizerOptions {
            max_features: Some(5_000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v.len(), 5_000);
}

#[test]
#[ignore = "needs `memaudit data fetch`"]
fn adult_counts() {
    let train = cache().adult(Split::Train).unwrap();
    let test = cache().adult(Split::Test).unwrap();
    // UCI: 32,561 train (7,841 >50K) and 16,281 test (3,846 >50K).
    assert_eq!((train.len(), test.len()), (32_561, 16_281));
    assert_eq!(train.iter().filter(|r| r.income_over_50k).count(), 7_841);
    assert_eq!(test.iter().filter(|r| r.income_over_50k).count(), 3_846);
    let enc = memaudit_data::AdultEncoder::fit(&train).unwrap();
    let (x, y) = enc.transform(&test);
    assert_eq!((x.rows, y.len()), (16_281, 16_281));
}

#[test]
#[ignore = "needs `memaudit data fetch`"]
fn text_collections() {
    let c = cache();
    let sotu = c.sotu().unwrap();
    assert_eq!(sotu.len(), 233);
    assert_eq!(
        (sotu[0].year, sotu[0].president.as_str()),
        (1790, "george washington")
    );
    assert_eq!((sotu[232].year, sotu[232].party_code.as_str()), (2021, "d"));
    let plays = c.shakespeare().unwrap();
    assert_eq!(plays.len(), 38);
    assert!(
        plays
            .iter()
            .any(|p| p.slug == "hamlet" && p.text.starts_with("# Hamlet"))
    );
    let mails = c.spam_assassin().unwrap();
    assert_eq!(mails.len(), 6_046);
    assert_eq!(mails.iter().filter(|m| m.is_spam).count(), 1_896);
    let moby = c.moby_dick().unwrap();
    assert!(
        moby.starts_with("CHAPTER 1. Loomings.")
            && moby.contains(&memaudit_data::embedded_corpus()[..2000])
    );
}

#[test]
#[ignore = "needs `memaudit data fetch`"]
fn lfw_subset_pixels_match_numpy() {
    let set = cache().lfw_subset().unwrap();
    assert_eq!((set.n, set.height, set.width), (200, 25, 25));
    // numpy: np.round(np.load('lfw_subset.npy') * 255).astype(np.uint8)
    assert_eq!(&set.image(0)[..5], &[74, 84, 97, 128, 122]);
    assert_eq!(&set.image(199)[24 * 25 + 20..], &[12, 14, 15, 12, 12]);
    assert_eq!(
        set.pixels.iter().map(|&p| u64::from(p)).sum::<u64>(),
        12_021_236
    );
}
