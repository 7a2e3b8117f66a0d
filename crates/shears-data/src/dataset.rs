//! The in-memory data set, its train/test splits and per-channel normalisation constants.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Labelled images held in memory as raw bytes, each sample `[C, H, W]` in CHW order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    name: String,
    images: Vec<u8>,
    shape: [usize; 3],
    labels: Vec<u16>,
    classes: usize,
    /// Names of the classes in label order, where the data set has them (image folders).
    class_names: Vec<String>,
}

impl Dataset {
    /// Wraps `images` (N·C·H·W bytes, samples back to back) and `labels` (N, each `< classes`).
    pub fn new(
        name: impl Into<String>,
        images: Vec<u8>,
        shape: [usize; 3],
        labels: Vec<u16>,
        classes: usize,
    ) -> Result<Self> {
        let name = name.into();
        let what = || format!("dataset `{name}`");
        if shape.contains(&0) {
            return Err(DataError::config(
                what(),
                format!("sample shape {shape:?} has an empty dimension"),
            ));
        }
        if classes == 0 || classes > usize::from(u16::MAX) + 1 {
            return Err(DataError::config(
                what(),
                format!("{classes} classes (must be 1..=65536)"),
            ));
        }
        let sample_len = shape.iter().product::<usize>();
        if labels.len().checked_mul(sample_len) != Some(images.len()) {
            return Err(DataError::config(
                what(),
                format!(
                    "{} image bytes do not hold {} samples of shape {shape:?}",
                    images.len(),
                    labels.len()
                ),
            ));
        }
        if let Some(i) = labels.iter().position(|&l| usize::from(l) >= classes) {
            return Err(DataError::config(
                what(),
                format!(
                    "label {} of sample {i} is out of range ({classes} classes)",
                    labels[i]
                ),
            ));
        }
        Ok(Dataset {
            name,
            images,
            shape,
            labels,
            classes,
            class_names: Vec::new(),
        })
    }

    /// The same data set with the names of its classes (label `i` is `names[i]`); names beyond
    /// the class count are dropped.
    pub fn with_class_names(mut self, names: Vec<String>) -> Self {
        self.class_names = names;
        self.class_names.truncate(self.classes);
        self
    }

    /// Class names in label order; empty when the data set has none.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Name used in logs and reports (for example `fashion-mnist/train`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All pixels, N·C·H·W bytes, samples back to back in CHW order.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// Per-sample shape `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Bytes per sample, C·H·W.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Class index of every sample.
    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    /// Number of classes; every label is below it.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set holds no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of sample `i` in CHW order; panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Label of sample `i`; panics if `i >= len()`, like slice indexing.
    pub fn label(&self, i: usize) -> usize {
        usize::from(self.labels[i])
    }

    /// Number of samples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// Per-channel mean and (population) std of the pixels scaled to [0, 1].
    pub fn channel_stats(&self) -> Normalization {
        let [c, h, w] = self.shape;
        let plane = h * w;
        // Exact integer sums, so the statistics do not depend on summation order.
        let mut sums = vec![0u64; c];
        let mut squares = vec![0u64; c];
        for sample in self.images.chunks_exact(c * plane) {
            for (ch, pixels) in sample.chunks_exact(plane).enumerate() {
                let (mut s, mut q) = (0u64, 0u64);
                for &p in pixels {
                    let p = u64::from(p);
                    s += p;
                    q += p * p;
                }
                sums[ch] += s;
                squares[ch] += q;
            }
        }
        let count = (self.len() * plane) as u128;
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for ch in 0..c {
            let (s, q) = (u128::from(sums[ch]), u128::from(squares[ch]));
            if count == 0 {
                mean.push(0.0);
                std.push(1.0);
                continue;
            }
            let n = count as f64;
            mean.push((s as f64 / n / 255.0) as f32);
            // n·Σx² − (Σx)² is exact in u128 and never negative.
            let var = (count * q - s * s) as f64 / (n * n) / (255.0 * 255.0);
            // A constant channel would divide by zero; leave it unscaled instead.
            let sd = var.sqrt();
            std.push(if sd > 0.0 { sd as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }
}

/// Per-channel normalisation: a pixel `x` in [0, 255] becomes `(x/255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Checked constructor: one mean and one positive, finite std per channel.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(DataError::config(
                "normalisation",
                format!(
                    "{} means and {} stds; need one of each per channel",
                    mean.len(),
                    std.len()
                ),
            ));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::config(
                "normalisation",
                format!("std {s} must be positive and finite"),
            ));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::config(
                "normalisation",
                format!("mean {m} must be finite"),
            ));
        }
        Ok(Normalization { mean, std })
    }

    /// Mean 0 and std 1 on every channel: only the scaling to [0, 1] remains.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Number of channels it applies to.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Normalised value of byte `x` on channel `c`: the exact formula the loader applies.
    pub fn apply(&self, c: usize, x: u8) -> f32 {
        (f32::from(x) / 255.0 - self.mean[c]) / self.std[c]
    }
}

/// The train and test splits of one data set, with the normalisation to use on both.
#[derive(Debug, Clone)]
pub struct DataSplits {
    pub train: Dataset,
    pub test: Dataset,
    /// Published constants for known data sets, else computed from the train split.
    pub normalization: Normalization,
}

impl DataSplits {
    /// Checks both splits share sample shape and classes, and the normalisation fits them.
    pub fn new(train: Dataset, test: Dataset, normalization: Normalization) -> Result<Self> {
        if train.shape() != test.shape() || train.classes() != test.classes() {
            return Err(DataError::config(
                "data splits",
                format!(
                    "train `{}` is {:?} with {} classes but test `{}` is {:?} with {} classes",
                    train.name(),
                    train.shape(),
                    train.classes(),
                    test.name(),
                    test.shape(),
                    test.classes()
                ),
            ));
        }
        if normalization.channels() != train.shape()[0] {
            return Err(DataError::config(
                "normalisation",
                format!(
                    "{} channels but the images have {}",
                    normalization.channels(),
                    train.shape()[0]
                ),
            ));
        }
        Ok(DataSplits {
            train,
            test,
            normalization,
        })
    }

    /// Splits normalised with statistics computed from the train split.
    pub fn with_train_stats(train: Dataset, test: Dataset) -> Result<Self> {
        let normalization = train.channel_stats();
        DataSplits::new(train, test, normalization)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_channel() -> Dataset {
        // 2 samples of [2, 1, 2]: channel 0 holds 0, 255, 0, 255; channel 1 holds 51 everywhere.
        Dataset::new(
            "t",
            vec![0, 255, 51, 51, 0, 255, 51, 51],
            [2, 1, 2],
            vec![1, 0],
            2,
        )
        .unwrap()
    }

    #[test]
    fn accessors_slice_samples() {
        let d = two_channel();
        assert_eq!(d.len(), 2);
        assert_eq!(d.sample_len(), 4);
        assert_eq!(d.image(1), &[0, 255, 51, 51]);
        assert_eq!(d.label(0), 1);
        assert_eq!(d.class_counts(), vec![1, 1]);
    }

    #[test]
    fn channel_stats_match_hand_computation() {
        let n = two_channel().channel_stats();
        // Channel 0: values 0 and 1 equally often, mean 0.5, population std 0.5.
        // Channel 1: constant 0.2, std 0 which falls back to 1.
        assert_eq!(n.mean, vec![0.5, 0.2]);
        assert_eq!(n.std, vec![0.5, 1.0]);
    }

    #[test]
    fn channel_stats_of_uneven_values() {
        // Values 0, 51, 102 (0, 0.2, 0.4): mean 0.2, variance 0.08/3.
        let d = Dataset::new("t", vec![0, 51, 102], [1, 1, 1], vec![0, 0, 0], 1).unwrap();
        let n = d.channel_stats();
        assert!((n.mean[0] - 0.2).abs() < 1e-7);
        assert!((n.std[0] - (0.08f32 / 3.0).sqrt()).abs() < 1e-7);
    }

    #[test]
    fn new_rejects_inconsistent_input() {
        let err = Dataset::new("x", vec![0; 5], [1, 2, 2], vec![0], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid dataset `x`: 5 image bytes do not hold 1 samples of shape [1, 2, 2]"
        );
        let err = Dataset::new("x", vec![0; 4], [1, 2, 2], vec![3], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid dataset `x`: label 3 of sample 0 is out of range (2 classes)"
        );
    }

    #[test]
    fn normalization_checks_and_applies() {
        assert!(Normalization::new(vec![0.5], vec![0.0]).is_err());
        assert!(Normalization::new(vec![0.5, 0.1], vec![0.2]).is_err());
        let n = Normalization::new(vec![0.5], vec![0.25]).unwrap();
        assert_eq!(n.apply(0, 255), 2.0);
        assert_eq!(n.apply(0, 0), -2.0);
    }

    #[test]
    fn splits_must_agree() {
        let a = two_channel();
        let b = Dataset::new("b", vec![0; 2], [1, 1, 2], vec![0], 2).unwrap();
        assert!(DataSplits::with_train_stats(a.clone(), b).is_err());
        let s = DataSplits::with_train_stats(a.clone(), a).unwrap();
        assert_eq!(s.normalization.mean, vec![0.5, 0.2]);
        let wrong = Normalization::identity(1);
        assert!(DataSplits::new(s.train, s.test, wrong).is_err());
    }
}
