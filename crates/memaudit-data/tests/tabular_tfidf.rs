//! CSV (IMDB-style reviews, UCI Adult) and the TF-IDF vectoriser on a hand-computed example.

use std::fs;

use memaudit_data::tfidf::analyze;
use memaudit_data::{
    AdultEncoder, DataError, TermWeighting, TextVectorizer, VectorizerOptions, load_adult,
    load_reviews_csv,
};

#[test]
fn reviews_with_quoted_multiline_fields() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("reviews.csv");
    fs::write(
        &p,
        "text,label,source\n\"Great, \"\"really\"\" great.\nSecond line.\",1,imdb\nbad film,0,rotten_tomatoes\n",
    )
    .unwrap();
    let r = load_reviews_csv(&p).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].text, "Great, \"really\" great.\nSecond line.");
    assert_eq!((r[0].label, r[0].source.as_str()), (1, "imdb"));
    assert_eq!((r[1].label, r[1].source.as_str()), (0, "rotten_tomatoes"));
    // Columns in another order, no source column.
    fs::write(&p, "label,text\n0,meh\n").unwrap();
    let r = load_reviews_csv(&p).unwrap();
    assert_eq!(
        (r[0].text.as_str(), r[0].label, r[0].source.as_str()),
        ("meh", 0, "")
    );
}

#[test]
fn reviews_with_wrong_columns_are_errors_naming_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.csv");
    fs::write(&p, "review,sentiment\nx,1\n").unwrap();
    let e = load_reviews_csv(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.csv") && e.contains("line 1") && e.contains("text and label"),
        "{e}"
    );
    // Line 4: the multi-line record on lines 2-3 counts as two lines.
    fs::write(&p, "text,label,source\n\"a\nb\",1,imdb\nc,0\n").unwrap();
    let e = load_reviews_csv(&p).unwrap_err().to_string();
    assert!(e.contains("line 4") && e.contains("2 fields"), "{e}");
    fs::write(&p, "text,label\nc,positive\n").unwrap();
    let e = load_reviews_csv(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("0 or 1"), "{e}");
    assert!(matches!(
        load_reviews_csv(d.path()),
        Err(DataError::IsADirectory { .. })
    ));
    assert!(matches!(
        load_reviews_csv(&d.path().join("none.csv")),
        Err(DataError::NotFound { .. })
    ));
    fs::write(&p, b"text,label\ncaf\xE9,1\n").unwrap();
    let e = load_reviews_csv(&p).unwrap_err();
    assert!(matches!(e, DataError::InvalidUtf8 { line: 2, .. }), "{e:?}");
}

const ADULT_TRAIN: &str = "\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, ?, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K

";

#[test]
fn adult_records() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("adult.data");
    fs::write(&p, ADULT_TRAIN).unwrap();
    let r = load_adult(&p).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].numeric, [39.0, 77516.0, 13.0, 2174.0, 0.0, 40.0]);
    assert_eq!(r[0].categorical[0].as_deref(), Some("State-gov"));
    assert_eq!(r[1].categorical[0], None, "? is missing");
    assert!(!r[0].income_over_50k && r[1].income_over_50k);
    // The test file's style: a '|' first line, labels with a trailing '.'.
    let t = d.path().join("adult.test");
    fs::write(
        &t,
        format!(
            "|1x3 Cross validator\n{}",
            ADULT_TRAIN.replace("50K\n", "50K.\n")
        ),
    )
    .unwrap();
    assert_eq!(load_adult(&t).unwrap(), r);
}

#[test]
fn adult_with_wrong_columns_is_an_error_naming_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("adult.data");
    fs::write(&p, format!("{}\n1, 2, 3\n", ADULT_TRAIN.trim_end())).unwrap();
    let e = load_adult(&p).unwrap_err().to_string();
    assert!(
        e.contains("adult.data") && e.contains("line 3") && e.contains("3 columns"),
        "{e}"
    );
    fs::write(&p, ADULT_TRAIN.replace("39,", "old,")).unwrap();
    let e = load_adult(&p).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("age"), "{e}");
    fs::write(&p, ADULT_TRAIN.replace(">50K", "rich")).unwrap();
    let e = load_adult(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("rich"), "{e}");
}

#[test]
fn adult_encoder_standardises_and_one_hot_encodes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("adult.data");
    fs::write(&p, ADULT_TRAIN).unwrap();
    let r = load_adult(&p).unwrap();
    let enc = AdultEncoder::fit(&r).unwrap();
    // 6 numeric + workclass{State-gov} + education{Bachelors} + marital{2} + occupation{2}
    // + relationship{2} + race{White} + sex{Male} + country{United-States} = 17.
    assert_eq!(enc.dim(), 17);
    let names = enc.feature_names();
    assert_eq!(names[6], "workclass=State-gov");
    let (x, y) = enc.transform(&r);
    assert_eq!((x.rows, x.cols, y), (2, 17, vec![0, 1]));
    // Two values standardise to -1 and +1 (population std); a constant column to 0.
    assert_eq!(&x.data[0..6], &[-1.0, -1.0, 0.0, 1.0, 0.0, 1.0]);
    assert_eq!(x.data[17 + 6], 0.0, "missing workclass: all zeros");
    assert_eq!(x.data[6], 1.0);
    assert!(AdultEncoder::fit(&[]).is_err());
}

#[test]
fn analyzer_follows_sklearn_token_pattern() {
    assert_eq!(
        analyze("The cat's 2 big_dogs, A cat!", true),
        vec!["the", "cat", "big_dogs", "cat"]
    );
    assert_eq!(analyze("Ünïcode wörds", false), vec!["Ünïcode", "wörds"]);
}

#[test]
fn tfidf_hand_computed() {
    // n = 3 documents. df: apple 2, banana 2, cherry 1.
    // idf = ln((1+3)/(1+df)) + 1: apple = banana = ln(4/3) + 1, cherry = ln 2 + 1.
    let docs = ["apple apple banana", "banana cherry", "apple"];
    let v = TextVectorizer::fit(&docs, VectorizerOptions::default()).unwrap();
    assert_eq!(v.terms(), &["apple", "banana", "cherry"]);
    let (i_ab, i_c) = ((4.0f64 / 3.0).ln() + 1.0, 2.0f64.ln() + 1.0);
    let m = v.transform(&docs);
    assert_eq!(
        (m.rows, m.cols, m.row_ptr.clone()),
        (3, 3, vec![0, 2, 4, 5])
    );
    // Row 0: (2 i_ab, i_ab, 0) / norm = (2, 1, 0) / sqrt 5.
    let r0 = [2.0 / 5f64.sqrt(), 1.0 / 5f64.sqrt(), 0.0];
    // Row 1: (0, i_ab, i_c) / sqrt(i_ab^2 + i_c^2).
    let n1 = (i_ab * i_ab + i_c * i_c).sqrt();
    let r1 = [0.0, i_ab / n1, i_c / n1];
    let want: Vec<f64> = r0.into_iter().chain(r1).chain([1.0, 0.0, 0.0]).collect();
    // f32 storage: 1e-6 relative is a few ulps.
    for (got, want) in m.to_dense().iter().zip(&want) {
        assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert_eq!(m.row(1).0, &[1, 2]);
    // Inverse map and out-of-vocabulary words.
    assert_eq!(v.term(2), Some("cherry"));
    assert_eq!(v.feature_index("Banana"), Some(1));
    let unseen = v.transform(&["durian durian"]);
    assert_eq!((unseen.nnz(), unseen.row_ptr.clone()), (0, vec![0, 0]));
    // Raw counts without normalisation.
    let opts = VectorizerOptions {
        weighting: TermWeighting::Counts,
        l2_normalize: false,
        ..Default::default()
    };
    let c = TextVectorizer::fit(&docs, opts).unwrap().transform(&docs);
    assert_eq!(
        c.to_dense(),
        vec![2.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    );
}

#[test]
fn tfidf_vocabulary_cap_and_min_df() {
    // Total counts: apple 3, banana 2, cherry 1 -> cap 2 keeps apple and banana.
    let docs = ["apple apple banana", "banana cherry", "apple"];
    let v = TextVectorizer::fit(
        &docs,
        VectorizerOptions {
            max_features: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v.terms(), &["apple", "banana"]);
    let v = TextVectorizer::fit(
        &docs,
        VectorizerOptions {
            min_df: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v.terms(), &["apple", "banana"]);
    // Ties at the cap go to the alphabetically smaller term.
    let v = TextVectorizer::fit(
        &["zz yy xx"],
        VectorizerOptions {
            max_features: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(v.terms(), &["xx", "yy"]);
    assert!(
        TextVectorizer::fit(
            &docs,
            VectorizerOptions {
                max_features: Some(0),
                ..Default::default()
            }
        )
        .is_err()
    );
    // Saved with a model: serde round trip.
    let json = serde_json::to_string(&v).unwrap();
    let back: TextVectorizer = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v);
}
