//! Reading data files: whole-file reads with gzip detected by its magic bytes, not by name.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a file whole, gunzipping it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_maybe_gz(bytes, path)
}

/// Gunzips `bytes` when they start with the gzip magic; `origin` names them in errors.
pub fn decode_maybe_gz(bytes: Vec<u8>, origin: &Path) -> Result<Vec<u8>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    // The trailer's ISIZE (uncompressed size mod 2^32) sizes the buffer in one allocation; it is
    // only a hint, capped so a corrupt trailer cannot request an absurd amount of memory.
    let hint = bytes
        .last_chunk::<4>()
        .map_or(0, |t| u32::from_le_bytes(*t) as usize);
    let mut out = Vec::with_capacity(hint.min(1 << 30));
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| {
            DataError::file(origin, format!("gzip stream is corrupt or truncated: {e}"))
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn raw_bytes_pass_through_unchanged() {
        let data = vec![0u8, 0, 8, 1, 0, 0, 0, 0];
        assert_eq!(decode_maybe_gz(data.clone(), Path::new("x")).unwrap(), data);
    }

    #[test]
    fn gzip_is_detected_by_magic_not_name() {
        let dir = tempfile::tempdir().unwrap();
        // A `.bin` name holding gzip data, and a `.gz` name holding raw data: content decides.
        let zipped = dir.path().join("plain.bin");
        std::fs::write(&zipped, gz(b"hello idx")).unwrap();
        assert_eq!(read_maybe_gz(&zipped).unwrap(), b"hello idx");
        let raw = dir.path().join("fake.gz");
        std::fs::write(&raw, b"raw bytes").unwrap();
        assert_eq!(read_maybe_gz(&raw).unwrap(), b"raw bytes");
    }

    #[test]
    fn truncated_gzip_names_the_file() {
        let mut bytes = gz(&[7u8; 4000]);
        bytes.truncate(bytes.len() / 2);
        let err = decode_maybe_gz(bytes, Path::new("/d/a.gz"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/d/a.gz: gzip stream is corrupt"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_maybe_gz(Path::new("/nonexistent/shears/x.gz")).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/shears/x.gz: "),
            "{err}"
        );
    }
}
