//! A user's own images: `DIR/train/CLASS/*.png|jpg` and `DIR/test/CLASS/*.png|jpg`.
//!
//! The layout is torchvision's `ImageFolder`: one sub-folder per class, the classes sorted by
//! name give the label order, and the test split must use classes the training split has.
//! Every image is brought to one shape `[C, H, W]`: its shorter side is resized to the target
//! (bilinear), then the centre is cropped, so the aspect ratio is kept and nothing is
//! stretched. Channels become 1 (luma) or 3 (RGB). Normalisation comes from the training split's
//! own statistics, since no published constants exist for a user's images.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use crate::dataset::{DataSplits, Dataset};
use crate::error::{DataError, Result};

/// File extensions read as images (compared case-insensitively); other files are skipped.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Reads the image folder at `dir`.
///
/// `shape` is the `[C, H, W]` every image is brought to (the model's input, with C 1 or 3).
/// Without it, the first training image's size is used, and C is 3 when any training image has
/// colour, else 1.
pub fn read_image_folder(dir: &Path, shape: Option<[usize; 3]>) -> Result<DataSplits> {
    if !dir.is_dir() {
        return Err(DataError::file(
            dir,
            "is not a folder; an image-folder data set is DIR/train/CLASS/*.png|jpg and \
             DIR/test/CLASS/*.png|jpg",
        ));
    }
    if let Some([c, h, w]) = shape
        && (!matches!(c, 1 | 3) || h == 0 || w == 0)
    {
        return Err(DataError::config(
            "image shape",
            format!("{c}x{h}x{w}: images become 1 (grey) or 3 (RGB) channels of a non-empty size"),
        ));
    }
    let train_dir = split_dir(dir, "train")?;
    let test_dir = split_dir(dir, "test")?;
    let train_files = list_classes(&train_dir)?;
    let test_files = list_classes(&test_dir)?;
    let classes: Vec<String> = train_files.iter().map(|(c, _)| c.clone()).collect();
    // Labels are the training classes' positions; a test class must be one of them.
    let mut test_labelled = Vec::with_capacity(test_files.len());
    for (class, files) in &test_files {
        let Some(label) = classes.iter().position(|c| c == class) else {
            return Err(DataError::file(
                test_dir.join(class),
                format!(
                    "test class `{class}` has no folder in {} (training classes: {})",
                    train_dir.display(),
                    classes.join(", ")
                ),
            ));
        };
        test_labelled.push((label, files.as_slice()));
    }
    let train_labelled: Vec<(usize, &[PathBuf])> = train_files
        .iter()
        .enumerate()
        .map(|(label, (_, files))| (label, files.as_slice()))
        .collect();

    let train_images = decode_split(&train_labelled, shape.map(|[_, h, w]| [h, w]))?;
    // The first training image fixes the size when the caller gave none.
    let [h, w] = match shape {
        Some([_, h, w]) => [h, w],
        None => {
            let first = &train_images[0].1;
            [first.height() as usize, first.width() as usize]
        }
    };
    let channels = match shape {
        Some([c, _, _]) => c,
        None if train_images.iter().any(|(_, im)| im.color().has_color()) => 3,
        None => 1,
    };
    let test_images = decode_split(&test_labelled, Some([h, w]))?;
    let build = |name: &str, images: Vec<(u16, DynamicImage)>| {
        let mut bytes = Vec::with_capacity(images.len() * channels * h * w);
        let mut labels = Vec::with_capacity(images.len());
        for (label, img) in images {
            push_chw(&mut bytes, &img, channels);
            labels.push(label);
        }
        Dataset::new(name, bytes, [channels, h, w], labels, classes.len())
            .map(|d| d.with_class_names(classes.clone()))
    };
    let train = build("image-folder/train", train_images)?;
    let test = build("image-folder/test", test_images)?;
    DataSplits::with_train_stats(train, test)
}

/// `dir/name`, which must be a folder.
fn split_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let split = dir.join(name);
    if split.is_dir() {
        Ok(split)
    } else {
        Err(DataError::file(
            &split,
            format!("missing: an image folder holds {name}/CLASS/*.png|jpg"),
        ))
    }
}

/// Sorted entries of `dir`, without hidden ones.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if !hidden {
            entries.push(path);
        }
    }
    entries.sort();
    Ok(entries)
}

fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The class folders of one split, sorted by name, each with its sorted image files.
fn list_classes(split: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut classes = Vec::new();
    for class_dir in sorted_entries(split)?.into_iter().filter(|p| p.is_dir()) {
        let name = class_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| DataError::file(&class_dir, "class folder name is not UTF-8"))?
            .to_string();
        let files: Vec<PathBuf> = sorted_entries(&class_dir)?
            .into_iter()
            .filter(|p| is_image_file(p))
            .collect();
        if files.is_empty() {
            return Err(DataError::file(
                &class_dir,
                format!(
                    "class `{name}` holds no image ({} files)",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        classes.push((name, files));
    }
    if classes.is_empty() {
        return Err(DataError::file(
            split,
            "holds no class folder; put each class's images in a sub-folder named after it",
        ));
    }
    if classes.len() > usize::from(u16::MAX) + 1 {
        return Err(DataError::file(
            split,
            format!("{} class folders (at most 65536)", classes.len()),
        ));
    }
    Ok(classes)
}

/// Decodes every file of a split, each brought to `size` `[H, W]` when given (else the first
/// image's size decides, and later images are brought to it).
fn decode_split(
    classes: &[(usize, &[PathBuf])],
    size: Option<[usize; 2]>,
) -> Result<Vec<(u16, DynamicImage)>> {
    let mut size = size;
    let mut out = Vec::new();
    for &(label, files) in classes {
        // At most 65536 classes (checked when listed), so every label fits.
        let label = label as u16;
        for path in files {
            let img = decode(path)?;
            let [h, w] = *size.get_or_insert([img.height() as usize, img.width() as usize]);
            out.push((label, fit(img, h as u32, w as u32)));
        }
    }
    Ok(out)
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let reader = ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let img = reader
        .decode()
        .map_err(|e| DataError::file(path, format!("cannot decode the image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(DataError::file(path, "the image is empty (0 pixels)"));
    }
    Ok(img)
}

/// Resizes the shorter side to the target (bilinear) and crops the centre to `h x w`.
fn fit(img: DynamicImage, h: u32, w: u32) -> DynamicImage {
    let (iw, ih) = (img.width(), img.height());
    if (iw, ih) == (w, h) {
        return img;
    }
    let scale = f64::max(f64::from(w) / f64::from(iw), f64::from(h) / f64::from(ih));
    let rw = ((f64::from(iw) * scale).round() as u32).max(w);
    let rh = ((f64::from(ih) * scale).round() as u32).max(h);
    let resized = if (rw, rh) == (iw, ih) {
        img
    } else {
        img.resize_exact(rw, rh, FilterType::Triangle)
    };
    resized.crop_imm((rw - w) / 2, (rh - h) / 2, w, h)
}

/// Appends `img`'s pixels in CHW order with `channels` 1 (luma) or 3 (RGB).
fn push_chw(out: &mut Vec<u8>, img: &DynamicImage, channels: usize) {
    let hw = (img.width() * img.height()) as usize;
    if channels == 1 {
        out.extend_from_slice(img.to_luma8().as_raw());
        return;
    }
    let rgb = img.to_rgb8();
    let raw = rgb.as_raw();
    for c in 0..3 {
        out.extend((0..hw).map(|i| raw[i * 3 + c]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb, RgbImage};

    fn solid(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(w, h, Rgb(rgb)).save(path).unwrap();
    }

    /// Two classes of colour images, `cat` red and `dog` blue, PNG and JPEG mixed.
    fn colour_folder(dir: &Path) {
        solid(&dir.join("train/cat/a.png"), 8, 8, [255, 0, 0]);
        solid(&dir.join("train/cat/b.jpg"), 12, 8, [250, 0, 0]);
        solid(&dir.join("train/dog/a.PNG"), 8, 8, [0, 0, 255]);
        solid(&dir.join("test/dog/x.png"), 16, 16, [0, 0, 255]);
        std::fs::write(dir.join("train/dog/notes.txt"), "not an image").unwrap();
    }

    #[test]
    fn reads_classes_in_name_order_resized_to_the_target() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path());
        let s = read_image_folder(dir.path(), Some([3, 4, 4])).unwrap();
        assert_eq!(s.train.len(), 3, "notes.txt is not an image");
        assert_eq!(s.train.shape(), [3, 4, 4]);
        assert_eq!(s.train.labels(), &[0, 0, 1]);
        assert_eq!(s.test.labels(), &[1]);
        assert_eq!(s.train.class_names(), &["cat", "dog"]);
        assert_eq!(s.test.classes(), 2);
        // CHW: the red plane of a red cat is full, its blue plane empty.
        let cat = s.train.image(0);
        assert!(cat[..16].iter().all(|&p| p == 255), "{cat:?}");
        assert!(cat[32..].iter().all(|&p| p == 0), "{cat:?}");
        // The JPEG is lossy; its red plane stays near 250 after the resize and crop.
        assert!(s.train.image(1)[..16].iter().all(|&p| p > 230));
        let dog = s.test.image(0);
        assert!(dog[32..].iter().all(|&p| p == 255), "{dog:?}");
        // Statistics of the training split: two red images and one blue one.
        let n = &s.normalization;
        assert_eq!(n.channels(), 3);
        assert!(
            (n.mean[0] - (255.0 + 250.0) / 3.0 / 255.0).abs() < 0.01,
            "{n:?}"
        );
        assert!((n.mean[2] - 1.0 / 3.0).abs() < 0.01, "{n:?}");
    }

    #[test]
    fn without_a_target_the_first_image_sets_the_size_and_colour_sets_channels() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path());
        let s = read_image_folder(dir.path(), None).unwrap();
        assert_eq!(s.train.shape(), [3, 8, 8]);

        let grey = tempfile::tempdir().unwrap();
        for (split, class) in [("train", "a"), ("train", "b"), ("test", "a")] {
            let p = grey.path().join(format!("{split}/{class}/0.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            GrayImage::from_fn(6, 5, |x, _| image::Luma([x as u8 * 40]))
                .save(&p)
                .unwrap();
        }
        let s = read_image_folder(grey.path(), None).unwrap();
        assert_eq!(s.train.shape(), [1, 5, 6]);
        assert_eq!(&s.train.image(0)[..6], &[0, 40, 80, 120, 160, 200]);
    }

    #[test]
    fn a_wide_image_keeps_its_centre() {
        // Left third black, middle white, right third black: the centre crop is all white.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train/a/wide.png");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        GrayImage::from_fn(30, 10, |x, _| {
            image::Luma([if (10..20).contains(&x) { 255 } else { 0 }])
        })
        .save(&p)
        .unwrap();
        solid(&dir.path().join("test/a/t.png"), 4, 4, [0, 0, 0]);
        let s = read_image_folder(dir.path(), Some([1, 4, 4])).unwrap();
        assert!(
            s.train.image(0).iter().all(|&p| p > 200),
            "{:?}",
            s.train.image(0)
        );
    }

    fn err(dir: &Path, shape: Option<[usize; 3]>) -> String {
        read_image_folder(dir, shape).unwrap_err().to_string()
    }

    #[test]
    fn an_unreadable_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path());
        let bad = dir.path().join("train/dog/broken.jpg");
        std::fs::write(&bad, b"\xff\xd8\xff not really a jpeg").unwrap();
        let e = err(dir.path(), None);
        assert!(
            e.starts_with(&format!("{}: cannot decode the image", bad.display())),
            "{e}"
        );
    }

    #[test]
    fn an_empty_class_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path());
        let empty = dir.path().join("train/emu");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(empty.join("readme.md"), "later").unwrap();
        assert_eq!(
            err(dir.path(), None),
            format!(
                "{}: class `emu` holds no image (png, jpg, jpeg files)",
                empty.display()
            )
        );
    }

    #[test]
    fn a_test_class_missing_from_training_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path());
        solid(&dir.path().join("test/fox/f.png"), 8, 8, [9, 9, 9]);
        assert_eq!(
            err(dir.path(), None),
            format!(
                "{}: test class `fox` has no folder in {} (training classes: cat, dog)",
                dir.path().join("test/fox").display(),
                dir.path().join("train").display()
            )
        );
    }

    #[test]
    fn missing_splits_and_bad_shapes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        solid(&dir.path().join("train/a/a.png"), 4, 4, [1, 2, 3]);
        assert_eq!(
            err(dir.path(), None),
            format!(
                "{}: missing: an image folder holds test/CLASS/*.png|jpg",
                dir.path().join("test").display()
            )
        );
        std::fs::create_dir_all(dir.path().join("test")).unwrap();
        assert!(err(dir.path(), None).ends_with(
            "holds no class folder; put each class's images in a sub-folder named after it"
        ));
        assert_eq!(
            err(dir.path(), Some([2, 4, 4])),
            "invalid image shape: 2x4x4: images become 1 (grey) or 3 (RGB) channels of a \
             non-empty size"
        );
        let nowhere = dir.path().join("nope");
        assert!(err(&nowhere, None).contains("is not a folder"));
    }
}
