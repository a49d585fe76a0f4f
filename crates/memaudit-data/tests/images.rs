//! IDX (plain and gzipped, every damaged form), ImageSet normalisation and splits, the LFW .npy
//! reader and the embedded 8x8 digits.

use std::fs;
use std::io::Write;
use std::path::Path;

use memaudit_data::idx::encode_idx;
use memaudit_data::{
    DataError, ImageSet, Split, digits, load_idx_images, load_lfw_subset, load_mnist_dir, read_idx,
};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Three 2x3 images with pixel value 10*i + j, labels 7, 8, 9.
fn fixture(dir: &Path, gz: bool, prefix: &str) {
    let pixels: Vec<u8> = (0..3)
        .flat_map(|i| (0..6).map(move |j| 10 * i + j))
        .collect();
    let img = encode_idx(&[3, 2, 3], &pixels);
    let lab = encode_idx(&[3], &[7, 8, 9]);
    let (img, lab, ext) = if gz {
        (gzip(&img), gzip(&lab), ".gz")
    } else {
        (img, lab, "")
    };
    fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
    fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).unwrap();
}

#[test]
fn idx_reads_the_same_plain_or_gzipped() {
    for gz in [false, true] {
        let d = tempfile::tempdir().unwrap();
        fixture(d.path(), gz, "train");
        let set = load_mnist_dir(d.path(), Split::Train).unwrap();
        assert_eq!(
            (set.n, set.channels, set.height, set.width, set.max_value),
            (3, 1, 2, 3, 255)
        );
        assert_eq!(set.image(1), &[10, 11, 12, 13, 14, 15]);
        assert_eq!(set.labels, vec![7, 8, 9]);
        assert_eq!(set.num_classes(), 10);
    }
}

#[test]
fn missing_idx_files_are_named() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path(), false, "train");
    let e = load_mnist_dir(d.path(), Split::Test).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }));
    assert!(e.to_string().contains("t10k-images-idx3-ubyte"), "{e}");
    let e = read_idx(d.path()).unwrap_err();
    assert!(matches!(e, DataError::IsADirectory { .. }), "{e:?}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn damaged_idx_files_are_errors_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let good = encode_idx(&[2, 2, 2], &[1; 8]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short-header", vec![0, 0], "truncated"),
        (
            "wrong-magic",
            {
                let mut b = good.clone();
                b[0] = 0x50;
                b
            },
            "magic",
        ),
        (
            "float-dtype",
            {
                let mut b = good.clone();
                b[2] = 0x0D;
                b
            },
            "0x0d",
        ),
        ("truncated-dims", good[..9].to_vec(), "truncated"),
        (
            "truncated-data",
            good[..good.len() - 1].to_vec(),
            "expected 8 bytes",
        ),
        (
            "trailing-bytes",
            [good.clone(), vec![0]].concat(),
            "after the data",
        ),
        ("zero-dims", vec![0, 0, 8, 0], "zero dimensions"),
        ("broken-gzip", gzip(&good)[..20].to_vec(), "gzip"),
    ];
    for (name, bytes, needle) in cases {
        let p = write(d.path(), name, &bytes);
        let e = read_idx(&p).unwrap_err().to_string();
        assert!(
            e.contains(name) && e.to_lowercase().contains(needle),
            "{name}: {e}"
        );
    }
}

#[test]
fn idx_label_mismatches_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let img = write(d.path(), "img", &encode_idx(&[2, 1, 1], &[0, 1]));
    let lab3 = write(d.path(), "lab3", &encode_idx(&[3], &[0, 1, 2]));
    let lab2d = write(d.path(), "lab2d", &encode_idx(&[1, 2], &[0, 1]));
    let flat = write(d.path(), "flat", &encode_idx(&[2], &[0, 1]));
    assert!(
        load_idx_images(&img, &lab3)
            .unwrap_err()
            .to_string()
            .contains("3 labels for 2 images")
    );
    assert!(
        load_idx_images(&img, &lab2d)
            .unwrap_err()
            .to_string()
            .contains("one dimension")
    );
    assert!(
        load_idx_images(&flat, &lab3)
            .unwrap_err()
            .to_string()
            .contains("expected 3")
    );
}

#[test]
fn normalisation_by_hand() {
    let set = ImageSet::new(2, 1, 1, 2, vec![0, 255, 51, 102], vec![0, 1], 255).unwrap();
    assert_eq!(set.to_unit_f32(), vec![0.0, 1.0, 0.2, 0.4]);
    // mean of {0, 1, .2, .4} = .4; variance = (.16 + .36 + .04 + 0) / 4 = .14
    let (m, s) = set.mean_std();
    assert!(
        (m - 0.4).abs() < 1e-6 && (s - 0.14f32.sqrt()).abs() < 1e-6,
        "{m} {s}"
    );
    let z = set.to_standardized_f32(0.4, 0.5).unwrap();
    let want = [-0.8, 1.2, -0.4, 0.0];
    assert!(
        z.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{z:?}"
    );
    assert!(set.to_standardized_f32(0.0, 0.0).is_err());
    // Digits-style scale: max value 16.
    let d16 = ImageSet::new(1, 1, 1, 2, vec![8, 16], vec![3], 16).unwrap();
    assert_eq!(d16.to_unit_f32(), vec![0.5, 1.0]);
    assert!(ImageSet::new(2, 1, 1, 2, vec![0; 3], vec![0, 1], 255).is_err());
}

#[test]
fn subsets_and_seeded_splits() {
    let n = 50;
    let set = ImageSet::new(
        n,
        1,
        1,
        1,
        (0..n as u8).collect(),
        (0..n as u8).map(|i| i % 10).collect(),
        255,
    )
    .unwrap();
    let sub = set.subset(&[4, 2, 4]).unwrap();
    assert_eq!(sub.pixels, vec![4, 2, 4]);
    assert_eq!(sub.labels, vec![4, 2, 4]);
    assert!(set.subset(&[50]).is_err());
    let (tr, te) = set.split_train_test(0.2, 7).unwrap();
    assert_eq!((tr.n, te.n), (40, 10));
    let mut all: Vec<u8> = tr.pixels.iter().chain(&te.pixels).copied().collect();
    all.sort_unstable();
    assert_eq!(all, set.pixels, "a split is a partition");
    assert!(
        tr.pixels.windows(2).all(|w| w[0] < w[1]),
        "each part keeps the original order"
    );
    assert_eq!(
        set.split_train_test(0.2, 7).unwrap(),
        (tr.clone(), te.clone()),
        "same seed, same split"
    );
    assert_ne!(
        set.split_train_test(0.2, 8).unwrap().1,
        te,
        "another seed, another split"
    );
    assert!(set.split_train_test(1.5, 0).is_err());
}

/// A version-1.0 .npy file: magic, header length, a Python dict literal padded to 64 bytes.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_s = match shape {
        [a] => format!("({a},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn lfw_subset_npy_becomes_grey_bytes_with_face_labels() {
    let d = tempfile::tempdir().unwrap();
    let n = 200 * 2 * 3;
    let values: Vec<f64> = (0..n).map(|i| (i % 256) as f64 / 255.0).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = write(
        d.path(),
        "lfw_subset.npy",
        &npy("<f8", &[200, 2, 3], &bytes),
    );
    let set = load_lfw_subset(&p).unwrap();
    assert_eq!((set.n, set.height, set.width), (200, 2, 3));
    assert_eq!(
        set.pixels,
        (0..n).map(|i| (i % 256) as u8).collect::<Vec<_>>()
    );
    assert_eq!(set.labels.iter().filter(|&&l| l == 1).count(), 100);
    assert_eq!((set.labels[99], set.labels[100]), (1, 0));
    // float32 works too.
    let b32: Vec<u8> = values
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    let p32 = write(d.path(), "f32.npy", &npy("<f4", &[200, 2, 3], &b32));
    assert_eq!(load_lfw_subset(&p32).unwrap().pixels, set.pixels);
}

#[test]
fn damaged_npy_files_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let ok: Vec<u8> = (0..200 * 4).flat_map(|_| 0.5f64.to_le_bytes()).collect();
    let out_of_range: Vec<u8> = (0..200 * 4)
        .flat_map(|i| if i == 5 { 2.0f64 } else { 0.5 }.to_le_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not.npy", b"hello".to_vec(), "not a numpy"),
        (
            "shape.npy",
            npy("<f8", &[100, 2, 4], &ok[..100 * 8 * 8]),
            "200 images",
        ),
        (
            "rank.npy",
            npy("<f8", &[800], &ok),
            "expected (200, 25, 25)",
        ),
        (
            "range.npy",
            npy("<f8", &[200, 2, 2], &out_of_range),
            "flat index 5",
        ),
        (
            "short.npy",
            npy("<f8", &[200, 2, 2], &ok[..100]),
            "truncated",
        ),
        ("int.npy", npy("<i8", &[200, 2, 2], &ok), "float64"),
    ];
    for (name, bytes, needle) in cases {
        let p = write(d.path(), name, &bytes);
        let e = load_lfw_subset(&p).unwrap_err().to_string();
        assert!(
            e.contains(name) && e.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: {e}"
        );
    }
}

#[test]
fn digits_are_the_1797_uci_images() {
    let set = digits().unwrap();
    assert_eq!(
        (set.n, set.channels, set.height, set.width, set.max_value),
        (1797, 1, 8, 8, 16)
    );
    assert!(set.pixels.iter().all(|&v| v <= 16));
    assert_eq!(*set.pixels.iter().max().unwrap(), 16);
    // Class sizes of scikit-learn's load_digits (the same 1,797 images).
    let mut counts = [0usize; 10];
    for &l in &set.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    let (tr, te) = set.split_train_test(0.25, 0).unwrap();
    assert_eq!((tr.n, te.n), (1348, 449));
}
