//! CIFAR-10 and CIFAR-100 binary readers: fixed-size records of label byte(s) then 3x32x32 pixels.

use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::file::read_maybe_gz;

/// Pixels per CIFAR image: 3 planes (R, G, B) of 32x32.
const PIXELS: usize = 3 * 32 * 32;

/// Which of the two CIFAR binary layouts a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarVariant {
    /// `<label><3072 pixels>`, 10 classes.
    Cifar10,
    /// `<coarse label><fine label><3072 pixels>`, 20 coarse and 100 fine classes; fine is used.
    Cifar100,
}

impl CifarVariant {
    /// Classes of the label this crate keeps (CIFAR-100: the fine label).
    pub fn classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 1,
            CifarVariant::Cifar100 => 2,
        }
    }

    fn record_len(self) -> usize {
        self.label_bytes() + PIXELS
    }

    fn title(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "CIFAR-10",
            CifarVariant::Cifar100 => "CIFAR-100",
        }
    }
}

/// Splits one file's records into CHW pixels and labels; `origin` names the file in errors.
pub fn parse_cifar(
    bytes: &[u8],
    origin: &Path,
    variant: CifarVariant,
) -> Result<(Vec<u8>, Vec<u16>)> {
    let record = variant.record_len();
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::file(
            origin,
            format!(
                "size {} bytes is not a whole, non-zero number of {record}-byte {} records \
                 (truncated, or not a {} binary file)",
                bytes.len(),
                variant.title(),
                variant.title()
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = match variant {
            CifarVariant::Cifar10 => rec[0],
            CifarVariant::Cifar100 => {
                // A coarse label out of range means the records are misaligned or corrupt.
                if rec[0] >= 20 {
                    return Err(DataError::file(
                        origin,
                        format!(
                            "coarse label {} of record {i} is out of range (20 classes)",
                            rec[0]
                        ),
                    ));
                }
                rec[1]
            }
        };
        if usize::from(label) >= variant.classes() {
            return Err(DataError::file(
                origin,
                format!(
                    "label {label} of record {i} is out of range ({} classes)",
                    variant.classes()
                ),
            ));
        }
        labels.push(u16::from(label));
        images.extend_from_slice(&rec[variant.label_bytes()..]);
    }
    Ok((images, labels))
}

/// Reads and concatenates CIFAR binary files (gzip or raw) into one data set.
pub fn read_cifar_files(name: &str, paths: &[PathBuf], variant: CifarVariant) -> Result<Dataset> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let bytes = read_maybe_gz(path)?;
        let (imgs, lbls) = parse_cifar(&bytes, path, variant)?;
        images.extend_from_slice(&imgs);
        labels.extend_from_slice(&lbls);
    }
    Dataset::new(name, images, [3, 32, 32], labels, variant.classes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record10(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..PIXELS).map(|p| fill.wrapping_add((p / 1024) as u8)));
        r
    }

    fn record100(coarse: u8, fine: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![coarse, fine];
        r.extend(std::iter::repeat_n(fill, PIXELS));
        r
    }

    #[test]
    fn reads_cifar10_records_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("data_batch_1.bin");
        let b = dir.path().join("data_batch_2.bin");
        std::fs::write(&a, [record10(3, 10), record10(9, 20)].concat()).unwrap();
        std::fs::write(&b, crate::idx::gzip(&record10(0, 30))).unwrap();
        let d = read_cifar_files("c", &[a, b], CifarVariant::Cifar10).unwrap();
        assert_eq!(d.shape(), [3, 32, 32]);
        assert_eq!(d.labels(), &[3, 9, 0]);
        // Planes are R, G, B in order: pixel 0 of plane k of sample 1 is 20 + k.
        assert_eq!(d.image(1)[0], 20);
        assert_eq!(d.image(1)[1024], 21);
        assert_eq!(d.image(1)[2048], 22);
        assert_eq!(d.image(2)[3071], 32);
    }

    #[test]
    fn cifar100_keeps_the_fine_label() {
        let bytes = [record100(4, 77, 1), record100(19, 99, 2)].concat();
        let (imgs, lbls) =
            parse_cifar(&bytes, Path::new("train.bin"), CifarVariant::Cifar100).unwrap();
        assert_eq!(lbls, vec![77, 99]);
        assert_eq!(imgs.len(), 2 * PIXELS);
        assert_eq!(imgs[PIXELS], 2);
    }

    #[test]
    fn truncated_file_is_named() {
        let mut bytes = record10(1, 0);
        bytes.pop();
        let err = parse_cifar(
            &bytes,
            Path::new("/c/test_batch.bin"),
            CifarVariant::Cifar10,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "/c/test_batch.bin: size 3072 bytes is not a whole, non-zero number of 3073-byte \
             CIFAR-10 records (truncated, or not a CIFAR-10 binary file)"
        );
    }

    #[test]
    fn label_out_of_range_is_named() {
        let bytes = [record10(1, 0), record10(10, 0)].concat();
        let err = parse_cifar(&bytes, Path::new("b.bin"), CifarVariant::Cifar10)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "b.bin: label 10 of record 1 is out of range (10 classes)"
        );
        let bytes = record100(20, 5, 0);
        let err = parse_cifar(&bytes, Path::new("t.bin"), CifarVariant::Cifar100)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.bin: coarse label 20 of record 0 is out of range (20 classes)"
        );
        let bytes = record100(2, 100, 0);
        let err = parse_cifar(&bytes, Path::new("t.bin"), CifarVariant::Cifar100)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.bin: label 100 of record 0 is out of range (100 classes)"
        );
    }

    #[test]
    fn empty_file_is_rejected() {
        let err = parse_cifar(&[], Path::new("e.bin"), CifarVariant::Cifar100)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("e.bin: size 0 bytes"), "{err}");
    }
}
