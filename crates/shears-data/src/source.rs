//! Known data sets, where their files are looked for, and the embedded Fashion-MNIST subset.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cifar::{CifarVariant, read_cifar_files};
use crate::dataset::{DataSplits, Normalization};
use crate::error::{DataError, Result};
use crate::folder::read_image_folder;
use crate::idx::{decode_idx_dataset, read_idx_dataset};

/// Environment variable naming a folder that holds one sub-folder per data set.
pub const DATA_DIR_ENV: &str = "SHEARS_DATA_DIR";

/// Where the Debian package `dataset-fashion-mnist` installs the full Fashion-MNIST.
pub const SYSTEM_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The data sets shears knows how to find and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// First 10,000 train and 2,000 test images of Fashion-MNIST, embedded in the binary.
    FashionMnistSubset,
    /// Full Fashion-MNIST (60,000 / 10,000), IDX files.
    FashionMnist,
    /// MNIST digits (60,000 / 10,000), IDX files.
    Mnist,
    /// CIFAR-10 binary release (50,000 / 10,000, 3x32x32).
    Cifar10,
    /// CIFAR-100 binary release (50,000 / 10,000, 3x32x32, fine labels).
    Cifar100,
    /// The user's own images: `DIR/train/CLASS/*.png|jpg` and `DIR/test/CLASS/...`.
    ImageFolder,
}

impl DatasetKind {
    /// Every kind, in the order names are listed to users.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::FashionMnistSubset,
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::ImageFolder,
    ];

    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnistSubset => "fashion-mnist-subset",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageFolder => "image-folder",
        }
    }

    /// Number of classes, fixed for the published data sets (an image folder has its own).
    pub fn classes(self) -> Option<usize> {
        match self {
            DatasetKind::ImageFolder => None,
            DatasetKind::Cifar100 => Some(100),
            _ => Some(10),
        }
    }

    /// Per-sample shape `[C, H, W]` of the published files (an image folder takes the model's).
    pub fn shape(self) -> Option<[usize; 3]> {
        match self {
            DatasetKind::ImageFolder => None,
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Some([3, 32, 32]),
            _ => Some([1, 28, 28]),
        }
    }

    /// Widely published train-split mean/std, where the data set has them (not the subset).
    pub fn published_normalization(self) -> Option<Normalization> {
        let (mean, std): (&[f32], &[f32]) = match self {
            DatasetKind::FashionMnistSubset | DatasetKind::ImageFolder => return None,
            DatasetKind::FashionMnist => (&[0.2860], &[0.3530]),
            DatasetKind::Mnist => (&[0.1307], &[0.3081]),
            // Per-pixel population std; the often-copied (0.2023, 0.1994, 0.2010) is not that.
            DatasetKind::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            DatasetKind::Cifar100 => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
        };
        Some(Normalization {
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }

    /// Sub-folders of a search base that commonly hold this data set's files.
    fn subdirs(self) -> &'static [&'static str] {
        match self {
            DatasetKind::FashionMnistSubset | DatasetKind::ImageFolder => &[],
            DatasetKind::FashionMnist => &["fashion-mnist", "FashionMNIST/raw"],
            DatasetKind::Mnist => &["mnist", "MNIST/raw"],
            DatasetKind::Cifar10 => &["cifar-10-batches-bin", "cifar10"],
            DatasetKind::Cifar100 => &["cifar-100-binary", "cifar100"],
        }
    }

    fn hint(self) -> String {
        match self {
            DatasetKind::FashionMnist => format!(
                "install it with `apt-get install dataset-fashion-mnist` (files go to \
                 {SYSTEM_FASHION_MNIST}), or pass --data DIR holding {}",
                IDX_FILES.join(", ")
            ),
            DatasetKind::Mnist => format!(
                "pass --data DIR (or set {DATA_DIR_ENV} to a folder with mnist/) holding {}",
                IDX_FILES.join(", ")
            ),
            DatasetKind::Cifar10 => format!(
                "pass --data DIR (or set {DATA_DIR_ENV} to a folder with cifar10/) holding \
                 data_batch_1.bin .. data_batch_5.bin and test_batch.bin \
                 (the cifar-10-batches-bin folder of the binary release)"
            ),
            DatasetKind::Cifar100 => format!(
                "pass --data DIR (or set {DATA_DIR_ENV} to a folder with cifar100/) holding \
                 train.bin and test.bin (the cifar-100-binary folder of the binary release)"
            ),
            DatasetKind::ImageFolder => {
                "pass --data DIR (or [data] dir) holding train/CLASS/*.png|jpg and \
                 test/CLASS/*.png|jpg"
                    .to_string()
            }
            DatasetKind::FashionMnistSubset => String::new(),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| DataError::UnknownDataset {
                name: s.to_string(),
                known: DatasetKind::ALL.map(DatasetKind::name).join(", "),
            })
    }
}

/// Standard IDX file names (each may also be raw, without `.gz`).
const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// Loads the train and test splits of `kind`, searching `dir` first when given.
///
/// The subset is embedded and ignores `dir`. Without `dir`, files are looked for under
/// `$SHEARS_DATA_DIR/<name>` and, for Fashion-MNIST, in [`SYSTEM_FASHION_MNIST`].
pub fn load(kind: DatasetKind, dir: Option<&Path>) -> Result<DataSplits> {
    load_sized(kind, dir, None)
}

/// [`load`] where an image folder's images are brought to `image_shape` `[C, H, W]` (the
/// model's input); the published data sets have their own shape and ignore it.
pub fn load_sized(
    kind: DatasetKind,
    dir: Option<&Path>,
    image_shape: Option<[usize; 3]>,
) -> Result<DataSplits> {
    let root = std::env::var_os(DATA_DIR_ENV).map(PathBuf::from);
    if kind == DatasetKind::ImageFolder
        && let Some(d) = dir
    {
        return read_image_folder(d, image_shape);
    }
    load_from(kind, dir, root.as_deref())
}

/// [`load`] with the data root given explicitly instead of read from `$SHEARS_DATA_DIR`.
pub fn load_from(kind: DatasetKind, dir: Option<&Path>, root: Option<&Path>) -> Result<DataSplits> {
    match (kind, dir) {
        (DatasetKind::FashionMnistSubset, _) => return load_embedded_subset(),
        (DatasetKind::ImageFolder, Some(d)) => return read_image_folder(d, None),
        _ => {}
    }
    let looked = search_dirs(kind, dir, root);
    // The first folder holding any of the files decides: a partial set there is an error.
    let found = looked
        .iter()
        .map(|d| locate(kind, d))
        .find_map(|r| r.transpose());
    let files = match found {
        Some(files) => files?,
        None => {
            return Err(DataError::NotFound {
                dataset: kind.name().to_string(),
                looked,
                hint: kind.hint(),
            });
        }
    };
    let classes = kind.classes().unwrap_or(10);
    let (train, test) = match &files {
        Files::Idx(f) => (
            read_idx_dataset(&format!("{kind}/train"), &f[0], &f[1], classes)?,
            read_idx_dataset(&format!("{kind}/test"), &f[2], &f[3], classes)?,
        ),
        Files::Cifar { train, test } => {
            let variant = match kind {
                DatasetKind::Cifar100 => CifarVariant::Cifar100,
                _ => CifarVariant::Cifar10,
            };
            (
                read_cifar_files(&format!("{kind}/train"), train, variant)?,
                read_cifar_files(&format!("{kind}/test"), std::slice::from_ref(test), variant)?,
            )
        }
    };
    match kind.published_normalization() {
        Some(norm) => DataSplits::new(train, test, norm),
        None => DataSplits::with_train_stats(train, test),
    }
}

/// Folders searched, in order, for a data set's files.
pub fn search_dirs(kind: DatasetKind, dir: Option<&Path>, root: Option<&Path>) -> Vec<PathBuf> {
    let bases: Vec<PathBuf> = match (dir, kind) {
        (_, DatasetKind::FashionMnistSubset) => Vec::new(),
        (None, DatasetKind::ImageFolder) => Vec::new(),
        (Some(d), _) => vec![d.to_path_buf()],
        (None, _) => {
            let mut b: Vec<PathBuf> = root.map(|r| r.join(kind.name())).into_iter().collect();
            if kind == DatasetKind::FashionMnist {
                b.push(PathBuf::from(SYSTEM_FASHION_MNIST));
            }
            b
        }
    };
    bases
        .iter()
        .flat_map(|b| std::iter::once(b.clone()).chain(kind.subdirs().iter().map(|s| b.join(s))))
        .collect()
}

/// The files of one data set found in one folder.
enum Files {
    /// Train images, train labels, test images, test labels.
    Idx([PathBuf; 4]),
    Cifar {
        train: Vec<PathBuf>,
        test: PathBuf,
    },
}

/// Finds `kind`'s files in `dir`: `None` when none is there, an error when only some are.
fn locate(kind: DatasetKind, dir: &Path) -> Result<Option<Files>> {
    let wanted: Vec<Vec<String>> = match kind {
        DatasetKind::FashionMnistSubset | DatasetKind::ImageFolder => return Ok(None),
        DatasetKind::FashionMnist | DatasetKind::Mnist => IDX_FILES
            .iter()
            .map(|gz| {
                let raw = gz.trim_end_matches(".gz");
                // Some mirrors name them `train-images.idx3-ubyte`.
                let dotted = raw.replacen("-idx", ".idx", 1);
                vec![
                    gz.to_string(),
                    raw.to_string(),
                    format!("{dotted}.gz"),
                    dotted,
                ]
            })
            .collect(),
        DatasetKind::Cifar10 => (1..=5)
            .map(|i| format!("data_batch_{i}.bin"))
            .chain(std::iter::once("test_batch.bin".to_string()))
            .map(|n| vec![format!("{n}.gz"), n].into_iter().rev().collect())
            .collect(),
        DatasetKind::Cifar100 => ["train.bin", "test.bin"]
            .iter()
            .map(|n| vec![n.to_string(), format!("{n}.gz")])
            .collect(),
    };
    let found: Vec<Option<PathBuf>> = wanted
        .iter()
        .map(|names| names.iter().map(|n| dir.join(n)).find(|p| p.is_file()))
        .collect();
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(names, _)| names[0].as_str())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::file(
            dir,
            format!(
                "holds part of {kind} but not {} (gzip or raw)",
                missing.join(", ")
            ),
        ));
    }
    let mut paths: Vec<PathBuf> = found.into_iter().flatten().collect();
    Ok(Some(match kind {
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let [a, b, c, d]: [PathBuf; 4] = paths
                .try_into()
                .map_err(|_| DataError::file(dir, "expected four IDX files"))?;
            Files::Idx([a, b, c, d])
        }
        _ => {
            let test = paths
                .pop()
                .ok_or_else(|| DataError::file(dir, "no test file"))?;
            Files::Cifar { train: paths, test }
        }
    }))
}

const SUBSET_TRAIN_IMAGES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/fashion-mnist-subset/train-images-idx3-ubyte.gz"
));
const SUBSET_TRAIN_LABELS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/fashion-mnist-subset/train-labels-idx1-ubyte.gz"
));
const SUBSET_TEST_IMAGES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz"
));
const SUBSET_TEST_LABELS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz"
));

/// Decodes the Fashion-MNIST subset compiled into the binary (normalised by its train stats).
pub fn load_embedded_subset() -> Result<DataSplits> {
    let origin = |file: &str| PathBuf::from(format!("<embedded>/fashion-mnist-subset/{file}"));
    let name = DatasetKind::FashionMnistSubset.name();
    let train = decode_idx_dataset(
        &format!("{name}/train"),
        (SUBSET_TRAIN_IMAGES, &origin(IDX_FILES[0])),
        (SUBSET_TRAIN_LABELS, &origin(IDX_FILES[1])),
        10,
    )?;
    let test = decode_idx_dataset(
        &format!("{name}/test"),
        (SUBSET_TEST_IMAGES, &origin(IDX_FILES[2])),
        (SUBSET_TEST_LABELS, &origin(IDX_FILES[3])),
        10,
    )?;
    DataSplits::with_train_stats(train, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{encode_idx, gzip};

    #[test]
    fn names_round_trip_and_unknown_lists_all() {
        for kind in DatasetKind::ALL {
            assert_eq!(kind.name().parse::<DatasetKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
        }
        let err = "imagenet".parse::<DatasetKind>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown dataset `imagenet` (known: fashion-mnist-subset, fashion-mnist, mnist, \
             cifar10, cifar100, image-folder)"
        );
    }

    #[test]
    fn serde_names_match_cli_names() {
        for kind in DatasetKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<DatasetKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn search_order_prefers_dir_then_root_then_system() {
        let d = Path::new("/d");
        let r = Path::new("/r");
        assert_eq!(
            search_dirs(DatasetKind::Mnist, Some(d), Some(r)),
            vec![
                PathBuf::from("/d"),
                PathBuf::from("/d/mnist"),
                PathBuf::from("/d/MNIST/raw")
            ]
        );
        assert_eq!(
            search_dirs(DatasetKind::FashionMnist, None, Some(r)),
            vec![
                PathBuf::from("/r/fashion-mnist"),
                PathBuf::from("/r/fashion-mnist/fashion-mnist"),
                PathBuf::from("/r/fashion-mnist/FashionMNIST/raw"),
                PathBuf::from(SYSTEM_FASHION_MNIST),
                PathBuf::from(format!("{SYSTEM_FASHION_MNIST}/fashion-mnist")),
                PathBuf::from(format!("{SYSTEM_FASHION_MNIST}/FashionMNIST/raw")),
            ]
        );
        assert!(search_dirs(DatasetKind::Cifar10, None, None).is_empty());
    }

    #[test]
    fn missing_mnist_says_what_to_do() {
        let err = load_from(DatasetKind::Mnist, None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "mnist not found; looked in: (nowhere); pass --data DIR (or set SHEARS_DATA_DIR to \
             a folder with mnist/) holding train-images-idx3-ubyte.gz, \
             train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"
        );
    }

    #[test]
    fn missing_fashion_mnist_lists_places_and_suggests_apt() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_from(DatasetKind::FashionMnist, Some(dir.path()), None)
            .unwrap_err()
            .to_string();
        let d = dir.path().display();
        assert!(
            err.starts_with(&format!(
                "fashion-mnist not found; looked in: {d}, {d}/fashion-mnist, {d}/FashionMNIST/raw; \
                 install it with `apt-get install dataset-fashion-mnist`"
            )),
            "{err}"
        );
        assert!(err.contains("or pass --data DIR"), "{err}");
    }

    /// Writes a tiny MNIST-like set: `n` train and `n` test 2x2 images, labels `i % 10`.
    fn write_idx_set(dir: &Path, n: u8, gz: bool) {
        std::fs::create_dir_all(dir).unwrap();
        let labels: Vec<u8> = (0..n).map(|i| i % 10).collect();
        let pixels: Vec<u8> = (0..n).flat_map(|i| [i; 4]).collect();
        for prefix in ["train", "t10k"] {
            let img = encode_idx(&[u32::from(n), 2, 2], &pixels);
            let lbl = encode_idx(&[u32::from(n)], &labels);
            let (img, lbl, ext) = if gz {
                (gzip(&img), gzip(&lbl), ".gz")
            } else {
                (img, lbl, "")
            };
            std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
            std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lbl).unwrap();
        }
    }

    #[test]
    fn finds_idx_files_in_a_subfolder_of_dir() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(&dir.path().join("mnist"), 12, false);
        let s = load_from(DatasetKind::Mnist, Some(dir.path()), None).unwrap();
        assert_eq!(s.train.len(), 12);
        assert_eq!(s.test.shape(), [1, 2, 2]);
        assert_eq!(s.train.name(), "mnist/train");
        assert_eq!(s.train.label(11), 1);
        assert_eq!(s.train.image(5), &[5, 5, 5, 5]);
        assert_eq!(s.normalization.mean, vec![0.1307]);
    }

    #[test]
    fn finds_fashion_mnist_under_the_data_root() {
        let root = tempfile::tempdir().unwrap();
        write_idx_set(&root.path().join("fashion-mnist"), 3, true);
        let s = load_from(DatasetKind::FashionMnist, None, Some(root.path())).unwrap();
        assert_eq!(s.test.len(), 3);
        assert_eq!(s.normalization.std, vec![0.3530]);
    }

    #[test]
    fn partial_idx_set_names_the_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 2, true);
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let err = load_from(DatasetKind::Mnist, Some(dir.path()), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}: holds part of mnist but not t10k-labels-idx1-ubyte.gz (gzip or raw)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn corrupt_file_inside_a_found_set_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), 2, false);
        let bad = dir.path().join("t10k-images-idx3-ubyte");
        std::fs::write(&bad, [0u8, 0, 8, 3, 0, 0, 0, 2]).unwrap();
        let err = load_from(DatasetKind::Mnist, Some(dir.path()), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}: header declares 3 dimensions but the file ends after 8 bytes (truncated?)",
                bad.display()
            )
        );
    }

    fn cifar_record(label_bytes: &[u8], fill: u8) -> Vec<u8> {
        let mut r = label_bytes.to_vec();
        r.extend(std::iter::repeat_n(fill, 3072));
        r
    }

    #[test]
    fn loads_cifar10_batches_in_order() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar-10-batches-bin");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=5u8 {
            let rec = cifar_record(&[i], i);
            std::fs::write(dir.join(format!("data_batch_{i}.bin")), rec).unwrap();
        }
        std::fs::write(dir.join("test_batch.bin"), cifar_record(&[9], 99)).unwrap();
        let s = load_from(DatasetKind::Cifar10, Some(root.path()), None).unwrap();
        assert_eq!(s.train.labels(), &[1, 2, 3, 4, 5]);
        assert_eq!(s.train.image(4)[3071], 5);
        assert_eq!(s.test.labels(), &[9]);
        assert_eq!(s.train.shape(), [3, 32, 32]);
        assert_eq!(s.normalization.channels(), 3);
    }

    #[test]
    fn loads_cifar100_fine_labels() {
        let dir = tempfile::tempdir().unwrap();
        let train = [cifar_record(&[3, 42], 1), cifar_record(&[0, 0], 2)].concat();
        std::fs::write(dir.path().join("train.bin"), train).unwrap();
        std::fs::write(dir.path().join("test.bin"), cifar_record(&[19, 99], 3)).unwrap();
        let s = load_from(DatasetKind::Cifar100, Some(dir.path()), None).unwrap();
        assert_eq!(s.train.labels(), &[42, 0]);
        assert_eq!(s.test.labels(), &[99]);
        assert_eq!(s.train.classes(), 100);
    }

    #[test]
    fn embedded_subset_has_the_documented_contents() {
        // Ignores any directory: the subset is compiled in.
        let s = load_from(
            DatasetKind::FashionMnistSubset,
            Some(Path::new("/nonexistent")),
            None,
        )
        .unwrap();
        assert_eq!(s.train.len(), 10_000);
        assert_eq!(s.test.len(), 2_000);
        assert_eq!(s.train.classes(), 10);
        assert_eq!(s.train.shape(), [1, 28, 28]);
        // Class balance printed by data/make_subset.py when it made the files.
        assert_eq!(
            s.train.class_counts(),
            vec![942, 1027, 1016, 1019, 974, 989, 1021, 1022, 990, 1000]
        );
        assert_eq!(
            s.test.class_counts(),
            vec![200, 203, 214, 190, 219, 195, 197, 200, 194, 188]
        );
        // Fashion-MNIST's first training image is an ankle boot (class 9), first test one too.
        assert_eq!(s.train.label(0), 9);
        assert_eq!(s.test.label(0), 9);
        // Its train statistics are close to the published full-set ones.
        let n = &s.normalization;
        assert!((n.mean[0] - 0.2860).abs() < 0.005, "{n:?}");
        assert!((n.std[0] - 0.3530).abs() < 0.005, "{n:?}");
    }

    #[test]
    fn system_fashion_mnist_matches_its_published_statistics() {
        // Only where the Debian package is installed; elsewhere there is nothing to read.
        if !Path::new(SYSTEM_FASHION_MNIST).is_dir() {
            eprintln!("skipped: {SYSTEM_FASHION_MNIST} is absent");
            return;
        }
        let s = load_from(DatasetKind::FashionMnist, None, None).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
        assert_eq!(s.train.shape(), [1, 28, 28]);
        assert_eq!(s.train.class_counts(), vec![6000; 10]);
        assert_eq!(s.test.class_counts(), vec![1000; 10]);
        let computed = s.train.channel_stats();
        let published = DatasetKind::FashionMnist.published_normalization().unwrap();
        assert_eq!(s.normalization, published);
        assert!(
            (computed.mean[0] - published.mean[0]).abs() < 5e-5,
            "{computed:?}"
        );
        assert!(
            (computed.std[0] - published.std[0]).abs() < 5e-5,
            "{computed:?}"
        );
        // The embedded subset is exactly the first samples of the full set.
        let sub = load_embedded_subset().unwrap();
        assert_eq!(sub.train.images(), &s.train.images()[..10_000 * 784]);
        assert_eq!(sub.test.labels(), &s.test.labels()[..2_000]);
    }
}
