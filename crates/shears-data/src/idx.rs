//! IDX reader (MNIST, Fashion-MNIST): unsigned-byte image and label files, gzip or raw.

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::file::{decode_maybe_gz, read_maybe_gz};

/// IDX element type code of unsigned bytes, the only type image data sets use.
const UBYTE: u8 = 0x08;

/// A decoded IDX array of unsigned bytes: its dimensions and its row-major data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses an uncompressed IDX file's bytes; `origin` names the file in errors.
pub fn parse_idx(mut bytes: Vec<u8>, origin: &Path) -> Result<IdxArray> {
    let bad = |message: String| DataError::file(origin, message);
    if bytes.len() < 4 {
        return Err(bad(format!(
            "too short for an IDX header ({} bytes; truncated?)",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "bad magic number 0x{:02x}{:02x}{:02x}{:02x}: not an IDX file \
             (an IDX file starts with 0x0000 then its type and dimension count)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != UBYTE {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        )));
    }
    let ndim = usize::from(bytes[3]);
    let header_len = 4 + 4 * ndim;
    if bytes.len() < header_len {
        return Err(bad(format!(
            "header declares {ndim} dimensions but the file ends after {} bytes (truncated?)",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {} overflow", fmt_dims(&dims))))?;
    let actual = bytes.len() - header_len;
    if actual != expected {
        let what = if actual < expected {
            "truncated"
        } else {
            "trailing data"
        };
        return Err(bad(format!(
            "header says {} = {expected} bytes of data but {actual} follow ({what})",
            fmt_dims(&dims)
        )));
    }
    bytes.drain(..header_len);
    Ok(IdxArray { dims, data: bytes })
}

/// Reads an IDX file (gzip or raw, told apart by content).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_idx(read_maybe_gz(path)?, path)
}

/// Checks an IDX array holds images `[count, rows, cols]`; returns `(count, rows, cols)`.
pub fn image_dims(array: &IdxArray, origin: &Path) -> Result<(usize, usize, usize)> {
    match array.dims[..] {
        [n, h, w] if n > 0 && h > 0 && w > 0 => Ok((n, h, w)),
        [_, _, _] => Err(DataError::file(
            origin,
            format!(
                "image file has an empty dimension ({})",
                fmt_dims(&array.dims)
            ),
        )),
        _ => Err(DataError::file(
            origin,
            format!(
                "image file has {} dimensions ({}), expected 3 (count x rows x cols)",
                array.dims.len(),
                fmt_dims(&array.dims)
            ),
        )),
    }
}

/// Checks an IDX array holds labels `[count]`; returns `count`.
pub fn label_count(array: &IdxArray, origin: &Path) -> Result<usize> {
    match array.dims[..] {
        [n] => Ok(n),
        _ => Err(DataError::file(
            origin,
            format!(
                "label file has {} dimensions ({}), expected 1 (count)",
                array.dims.len(),
                fmt_dims(&array.dims)
            ),
        )),
    }
}

/// Builds a one-channel data set from already-decoded IDX image and label arrays.
pub fn dataset_from_idx(
    name: &str,
    images: IdxArray,
    images_origin: &Path,
    labels: IdxArray,
    labels_origin: &Path,
    classes: usize,
) -> Result<Dataset> {
    let (n, h, w) = image_dims(&images, images_origin)?;
    let n_labels = label_count(&labels, labels_origin)?;
    if n != n_labels {
        return Err(DataError::CountMismatch {
            images: images_origin.to_path_buf(),
            labels: labels_origin.to_path_buf(),
            n_images: n,
            n_labels,
        });
    }
    let labels = labels_in_range(&labels.data, classes, labels_origin)?;
    Dataset::new(name, images.data, [1, h, w], labels, classes)
}

/// Reads an IDX image file and its label file into a one-channel data set.
pub fn read_idx_dataset(
    name: &str,
    images: &Path,
    labels: &Path,
    classes: usize,
) -> Result<Dataset> {
    dataset_from_idx(
        name,
        read_idx(images)?,
        images,
        read_idx(labels)?,
        labels,
        classes,
    )
}

/// Decodes in-memory (gzip or raw) IDX image and label files into a one-channel data set.
pub fn decode_idx_dataset(
    name: &str,
    images: (&[u8], &Path),
    labels: (&[u8], &Path),
    classes: usize,
) -> Result<Dataset> {
    let image_array = parse_idx(decode_maybe_gz(images.0.to_vec(), images.1)?, images.1)?;
    let label_array = parse_idx(decode_maybe_gz(labels.0.to_vec(), labels.1)?, labels.1)?;
    dataset_from_idx(name, image_array, images.1, label_array, labels.1, classes)
}

/// Widens byte labels, rejecting any `>= classes` with its sample index.
pub(crate) fn labels_in_range(labels: &[u8], classes: usize, origin: &Path) -> Result<Vec<u16>> {
    if let Some(i) = labels.iter().position(|&l| usize::from(l) >= classes) {
        return Err(DataError::file(
            origin,
            format!(
                "label {} of sample {i} is out of range (the data set has {classes} classes)",
                labels[i]
            ),
        ));
    }
    Ok(labels.iter().map(|&l| u16::from(l)).collect())
}

fn fmt_dims(dims: &[usize]) -> String {
    if dims.is_empty() {
        return "no dimensions".to_string();
    }
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

/// Encodes an unsigned-byte IDX file; used by tests to write synthetic files.
#[cfg(test)]
pub(crate) fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UBYTE, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Gzips bytes; used by tests.
#[cfg(test)]
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Three 2x3 images with pixel value = 10*image + position, labels 2, 0, 1.
    fn tiny() -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..3u8)
            .flat_map(|i| (0..6u8).map(move |p| 10 * i + p))
            .collect();
        (
            encode_idx(&[3, 2, 3], &pixels),
            encode_idx(&[3], &[2, 0, 1]),
        )
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn err_of(r: Result<Dataset>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn reads_raw_and_gzip_pairs_identically() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lbl) = tiny();
        let raw_i = write(dir.path(), "i-raw", &img);
        let raw_l = write(dir.path(), "l-raw", &lbl);
        let gz_i = write(dir.path(), "i.gz", &gzip(&img));
        let gz_l = write(dir.path(), "l.gz", &gzip(&lbl));
        let a = read_idx_dataset("t", &raw_i, &raw_l, 3).unwrap();
        let b = read_idx_dataset("t", &gz_i, &gz_l, 3).unwrap();
        assert_eq!(a.shape(), [1, 2, 3]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.labels(), &[2, 0, 1]);
        assert_eq!(a.image(1), &[10, 11, 12, 13, 14, 15]);
        assert_eq!(a.images(), b.images());
        assert_eq!(a.labels(), b.labels());
    }

    #[test]
    fn wrong_magic_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, lbl) = tiny();
        let i = write(dir.path(), "imgs", b"\x89PNG\r\n\x1a\nrest");
        let l = write(dir.path(), "lbls", &lbl);
        let err = err_of(read_idx_dataset("t", &i, &l, 3));
        assert_eq!(
            err,
            format!(
                "{}: bad magic number 0x89504e47: not an IDX file (an IDX file starts with \
                 0x0000 then its type and dimension count)",
                i.display()
            )
        );
    }

    #[test]
    fn unsupported_element_type_is_named() {
        let mut bytes = encode_idx(&[1], &[0; 4]);
        bytes[2] = 0x0d;
        let err = parse_idx(bytes, Path::new("f")).unwrap_err().to_string();
        assert_eq!(
            err,
            "f: IDX element type 0x0d is not supported (only unsigned bytes, 0x08)"
        );
    }

    #[test]
    fn truncated_data_is_named_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut img, lbl) = tiny();
        img.truncate(img.len() - 5);
        let i = write(dir.path(), "imgs.gz", &gzip(&img));
        let l = write(dir.path(), "lbls", &lbl);
        let err = err_of(read_idx_dataset("t", &i, &l, 3));
        assert_eq!(
            err,
            format!(
                "{}: header says 3 x 2 x 3 = 18 bytes of data but 13 follow (truncated)",
                i.display()
            )
        );
    }

    #[test]
    fn trailing_data_is_rejected() {
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes.push(9);
        let err = parse_idx(bytes, Path::new("l")).unwrap_err().to_string();
        assert_eq!(
            err,
            "l: header says 2 = 2 bytes of data but 3 follow (trailing data)"
        );
    }

    #[test]
    fn truncated_header_is_named() {
        let err = parse_idx(vec![0, 0, 8, 3, 0, 0], Path::new("h"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "h: header declares 3 dimensions but the file ends after 6 bytes (truncated?)"
        );
        let err = parse_idx(vec![0, 0], Path::new("h"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "h: too short for an IDX header (2 bytes; truncated?)");
    }

    #[test]
    fn wrong_dimension_counts_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lbl) = tiny();
        // Labels given where images belong and vice versa.
        let i = write(dir.path(), "imgs", &img);
        let l = write(dir.path(), "lbls", &lbl);
        let err = err_of(read_idx_dataset("t", &l, &i, 3));
        assert_eq!(
            err,
            format!(
                "{}: image file has 1 dimensions (3), expected 3 (count x rows x cols)",
                l.display()
            )
        );
        let two_d = write(dir.path(), "l2", &encode_idx(&[3, 1], &[0, 1, 2]));
        let err = err_of(read_idx_dataset("t", &i, &two_d, 3));
        assert_eq!(
            err,
            format!(
                "{}: label file has 2 dimensions (3 x 1), expected 1 (count)",
                two_d.display()
            )
        );
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = tiny();
        let i = write(dir.path(), "imgs", &img);
        let l = write(dir.path(), "lbls", &encode_idx(&[2], &[0, 1]));
        let err = err_of(read_idx_dataset("t", &i, &l, 3));
        assert_eq!(
            err,
            format!(
                "{} holds 3 images but {} holds 2 labels; they must describe the same samples",
                i.display(),
                l.display()
            )
        );
    }

    #[test]
    fn label_out_of_range_is_named_with_sample() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = tiny();
        let i = write(dir.path(), "imgs", &img);
        let l = write(dir.path(), "lbls", &encode_idx(&[3], &[0, 1, 10]));
        let err = err_of(read_idx_dataset("t", &i, &l, 10));
        assert_eq!(
            err,
            format!(
                "{}: label 10 of sample 2 is out of range (the data set has 10 classes)",
                l.display()
            )
        );
    }

    #[test]
    fn corrupt_gzip_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (img, lbl) = tiny();
        let mut bad = gzip(&img);
        // Corrupting the CRC trailer makes an otherwise complete stream fail its check.
        let n = bad.len();
        bad[n - 8] ^= 0xff;
        let i = write(dir.path(), "imgs.gz", &bad);
        let l = write(dir.path(), "lbls", &lbl);
        let err = err_of(read_idx_dataset("t", &i, &l, 3));
        assert!(
            err.starts_with(&format!(
                "{}: gzip stream is corrupt or truncated",
                i.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn decodes_in_memory_bytes() {
        let (img, lbl) = tiny();
        let d = decode_idx_dataset(
            "mem",
            (&gzip(&img), Path::new("a")),
            (&lbl, Path::new("b")),
            3,
        )
        .unwrap();
        assert_eq!(d.name(), "mem");
        assert_eq!(d.image(2), &[20, 21, 22, 23, 24, 25]);
    }
}
