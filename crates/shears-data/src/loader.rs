//! Batching: seeded per-epoch shuffle, normalisation and augmentation into contiguous NCHW f32.

use ndarray::Array4;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::augment::{Transform, write_sample};
use crate::dataset::{Dataset, Normalization};
use crate::error::{DataError, Result};
use crate::seed::{TAG_SHUFFLE, key};

/// One batch, ready to become a tensor: `images` is `shape` = `[N, C, H, W]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// N·C·H·W normalised pixels in NCHW order.
    pub images: Vec<f32>,
    /// Class index of each sample (i64, the element type of integer tensors).
    pub labels: Vec<i64>,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// Index of each sample in the data set.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples N.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// The images as an ndarray, without copying.
    pub fn images_array(self) -> Array4<f32> {
        let [n, c, h, w] = self.shape;
        Array4::from_shape_vec((n, c, h, w), self.images)
            .expect("a Batch's images always hold N*C*H*W values")
    }
}

/// How a [`Loader`] orders, transforms and groups samples.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (the last one may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Reorder samples each epoch with a permutation determined by `(seed, epoch)`.
    pub shuffle: bool,
    /// Skip a final batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Seeds the shuffle and the augmentation.
    pub seed: u64,
    /// Use only the first `limit` samples of the data set (before shuffling).
    pub limit: Option<usize>,
    /// Applied after scaling to [0, 1]; `None` keeps x/255.
    pub normalization: Option<Normalization>,
    /// Random crop: pad by this many zero pixels, crop back at a random offset (0 = off).
    pub crop_padding: usize,
    /// Random horizontal flip with probability 1/2.
    pub flip: bool,
}

impl LoaderConfig {
    /// Training defaults: shuffled by `seed`, all samples kept, no augmentation.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: false,
            seed,
            limit: None,
            normalization: None,
            crop_padding: 0,
            flip: false,
        }
    }

    /// Evaluation: file order, no augmentation, every sample.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            ..LoaderConfig::train(batch_size, 0)
        }
    }

    /// Sets the normalisation.
    pub fn normalized(mut self, normalization: Normalization) -> Self {
        self.normalization = Some(normalization);
        self
    }

    /// Sets random crop padding and flipping.
    pub fn augmented(mut self, crop_padding: usize, flip: bool) -> Self {
        self.crop_padding = crop_padding;
        self.flip = flip;
        self
    }

    /// Keeps only the first `limit` samples.
    pub fn limited(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }

    /// Sets whether a short final batch is skipped.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }
}

/// Produces the batches of one data set, epoch by epoch; cheap to create, borrows the data.
#[derive(Debug, Clone)]
pub struct Loader<'a> {
    dataset: &'a Dataset,
    config: LoaderConfig,
    /// `luts[c][x]`: byte x of channel c after scaling and normalisation.
    luts: Vec<[f32; 256]>,
    samples: usize,
}

impl<'a> Loader<'a> {
    /// Checks `config` against `dataset` and precomputes the per-channel value tables.
    pub fn new(dataset: &'a Dataset, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::config("loader", "batch size must be at least 1"));
        }
        let channels = dataset.shape()[0];
        let norm = match &config.normalization {
            Some(n) => Normalization::new(n.mean.clone(), n.std.clone())?,
            None => Normalization::identity(channels),
        };
        if norm.channels() != channels {
            return Err(DataError::config(
                "loader",
                format!(
                    "normalisation has {} channels but `{}` has {channels}",
                    norm.channels(),
                    dataset.name()
                ),
            ));
        }
        let luts = (0..channels)
            .map(|c| {
                let mut lut = [0f32; 256];
                for (x, v) in lut.iter_mut().enumerate() {
                    *v = norm.apply(c, x as u8);
                }
                lut
            })
            .collect();
        let samples = config.limit.map_or(dataset.len(), |l| l.min(dataset.len()));
        Ok(Loader {
            dataset,
            config,
            luts,
            samples,
        })
    }

    /// An evaluation loader: file order, no augmentation.
    pub fn eval(
        dataset: &'a Dataset,
        batch_size: usize,
        normalization: Option<Normalization>,
    ) -> Result<Self> {
        let config = LoaderConfig {
            normalization,
            ..LoaderConfig::eval(batch_size)
        };
        Loader::new(dataset, config)
    }

    /// The configuration in use.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The data set batches are drawn from.
    pub fn dataset(&self) -> &'a Dataset {
        self.dataset
    }

    /// Samples seen per epoch before `drop_last` (the data set's size, capped by `limit`).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let b = self.config.batch_size;
        if self.config.drop_last {
            self.samples / b
        } else {
            self.samples.div_ceil(b)
        }
    }

    /// Sample indices of `epoch` in visiting order: a pure function of (seed, epoch).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples).collect();
        if self.config.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(key(&[TAG_SHUFFLE, self.config.seed, epoch]));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The batches of `epoch`; the same `(seed, epoch)` always yields the same batches.
    pub fn epoch(&self, epoch: u64) -> Batches<'_, 'a> {
        Batches {
            loader: self,
            epoch,
            order: self.order(epoch),
            next: 0,
            end: self.num_batches(),
        }
    }

    /// Builds the batch of the given sample indices as seen in `epoch`.
    pub fn batch_of(&self, epoch: u64, indices: &[usize]) -> Result<Batch> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.dataset.len()) {
            return Err(DataError::config(
                "batch",
                format!(
                    "sample index {i} is beyond `{}` ({} samples)",
                    self.dataset.name(),
                    self.dataset.len()
                ),
            ));
        }
        Ok(self.build(epoch, indices))
    }

    fn build(&self, epoch: u64, indices: &[usize]) -> Batch {
        let shape = self.dataset.shape();
        let per = self.dataset.sample_len();
        let mut images = vec![0f32; indices.len() * per];
        let augment = self.config.crop_padding > 0 || self.config.flip;
        for (&i, dst) in indices.iter().zip(images.chunks_exact_mut(per)) {
            let t = if augment {
                Transform::sample(
                    self.config.seed,
                    epoch,
                    i,
                    self.config.crop_padding,
                    self.config.flip,
                )
            } else {
                Transform::IDENTITY
            };
            write_sample(self.dataset.image(i), shape, t, &self.luts, dst);
        }
        let labels = indices
            .iter()
            .map(|&i| self.dataset.label(i) as i64)
            .collect();
        Batch {
            images,
            labels,
            shape: [indices.len(), shape[0], shape[1], shape[2]],
            indices: indices.to_vec(),
        }
    }
}

/// Iterator over one epoch's batches; `nth`/`skip` jump ahead without building skipped batches.
#[derive(Debug)]
pub struct Batches<'l, 'a> {
    loader: &'l Loader<'a>,
    epoch: u64,
    order: Vec<usize>,
    next: usize,
    end: usize,
}

impl Iterator for Batches<'_, '_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let b = self.loader.config.batch_size;
        let start = self.next * b;
        let stop = (start + b).min(self.order.len());
        self.next += 1;
        Some(self.loader.build(self.epoch, &self.order[start..stop]))
    }

    fn nth(&mut self, n: usize) -> Option<Batch> {
        self.next = self.next.saturating_add(n).min(self.end);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_, '_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` samples of shape [1, 1, 2]: sample i holds bytes (i, 255 - i), label i % 3.
    fn counting(n: usize) -> Dataset {
        let images = (0..n).flat_map(|i| [i as u8, 255 - i as u8]).collect();
        let labels = (0..n).map(|i| (i % 3) as u16).collect();
        Dataset::new("count", images, [1, 1, 2], labels, 3).unwrap()
    }

    fn all_indices(loader: &Loader, epoch: u64) -> Vec<usize> {
        loader.epoch(epoch).flat_map(|b| b.indices).collect()
    }

    #[test]
    fn shuffle_is_a_reproducible_permutation_that_changes_per_epoch() {
        let d = counting(100);
        let loader = Loader::new(&d, LoaderConfig::train(16, 42)).unwrap();
        let e0 = all_indices(&loader, 0);
        let mut sorted = e0.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(e0, sorted, "epoch 0 was not shuffled");
        // A fresh loader (a resumed run) sees exactly the same order for the same epoch.
        let resumed = Loader::new(&d, LoaderConfig::train(16, 42)).unwrap();
        assert_eq!(all_indices(&resumed, 0), e0);
        assert_eq!(all_indices(&resumed, 3), all_indices(&loader, 3));
        assert_ne!(all_indices(&loader, 1), e0);
        let other_seed = Loader::new(&d, LoaderConfig::train(16, 43)).unwrap();
        assert_ne!(all_indices(&other_seed, 0), e0);
        // The order does not depend on the batch size.
        let wide = Loader::new(&d, LoaderConfig::train(64, 42)).unwrap();
        assert_eq!(all_indices(&wide, 0), e0);
    }

    #[test]
    fn batches_carry_their_samples() {
        let d = counting(10);
        let loader = Loader::new(&d, LoaderConfig::train(4, 5)).unwrap();
        for batch in loader.epoch(2) {
            for (k, &i) in batch.indices.iter().enumerate() {
                assert_eq!(batch.labels[k], (i % 3) as i64);
                assert_eq!(batch.images[2 * k], i as f32 / 255.0);
                assert_eq!(batch.images[2 * k + 1], (255 - i) as f32 / 255.0);
            }
        }
    }

    #[test]
    fn batch_sizes_include_the_short_last_batch() {
        let d = counting(10);
        let loader = Loader::new(&d, LoaderConfig::eval(4)).unwrap();
        assert_eq!(loader.num_batches(), 3);
        let batches: Vec<Batch> = loader.epoch(0).collect();
        let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(batches[2].shape, [2, 1, 1, 2]);
        assert_eq!(batches[2].images.len(), 4);
        assert_eq!(batches[2].indices, vec![8, 9]);
        assert_eq!(batches[0].indices, vec![0, 1, 2, 3]);

        let dropped = Loader::new(&d, LoaderConfig::eval(4).drop_last(true)).unwrap();
        assert_eq!(dropped.num_batches(), 2);
        assert_eq!(
            dropped.epoch(0).map(|b| b.len()).collect::<Vec<_>>(),
            vec![4, 4]
        );
        let exact = Loader::new(&d, LoaderConfig::eval(5).drop_last(true)).unwrap();
        assert_eq!(exact.epoch(0).len(), 2);
    }

    #[test]
    fn limit_takes_the_first_samples_before_shuffling() {
        let d = counting(50);
        let loader = Loader::new(&d, LoaderConfig::train(8, 1).limited(Some(20))).unwrap();
        assert_eq!(loader.samples(), 20);
        assert_eq!(loader.num_batches(), 3);
        let mut seen = all_indices(&loader, 0);
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        let big = Loader::new(&d, LoaderConfig::eval(8).limited(Some(500))).unwrap();
        assert_eq!(big.samples(), 50);
    }

    #[test]
    fn nth_skips_to_the_same_batch() {
        let d = counting(30);
        let loader = Loader::new(&d, LoaderConfig::train(7, 9).augmented(1, true)).unwrap();
        let all: Vec<Batch> = loader.epoch(4).collect();
        assert_eq!(loader.epoch(4).nth(3).unwrap(), all[3]);
        let mut it = loader.epoch(4);
        assert_eq!(it.nth(1).unwrap(), all[1]);
        assert_eq!(it.next().unwrap(), all[2]);
        assert!(loader.epoch(4).nth(5).is_none());
        let mut it = loader.epoch(4);
        assert_eq!(it.len(), 5);
        it.next();
        assert_eq!(it.len(), 4);
    }

    #[test]
    fn normalisation_values_are_exact() {
        // Two channels of 1x2: bytes (0, 255) then (51, 102).
        let d = Dataset::new("n", vec![0, 255, 51, 102], [2, 1, 2], vec![0], 1).unwrap();
        let norm = Normalization::new(vec![0.5, 0.2], vec![0.25, 0.5]).unwrap();
        let loader = Loader::eval(&d, 1, Some(norm)).unwrap();
        let b = loader.epoch(0).next().unwrap();
        // (0/255-0.5)/0.25 = -2, (1-0.5)/0.25 = 2, (0.2-0.2)/0.5 = 0, (0.4-0.2)/0.5 = 0.4.
        let expected = [-2.0f32, 2.0, 0.0, 0.4];
        for (got, want) in b.images.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", b.images);
        }
        // And bit-for-bit the documented formula.
        assert_eq!(
            b.images,
            vec![
                (0.0f32 / 255.0 - 0.5) / 0.25,
                (255.0f32 / 255.0 - 0.5) / 0.25,
                (51.0f32 / 255.0 - 0.2) / 0.5,
                (102.0f32 / 255.0 - 0.2) / 0.5,
            ]
        );
    }

    #[test]
    fn augmentation_is_reproducible_and_pads_with_normalised_black() {
        // One 1x1x4 image 10, 20, 30, 40; pad 1 means shifts of -1..=1 and padding value -2.
        let d = Dataset::new("a", vec![10, 20, 30, 40], [1, 1, 4], vec![0], 1).unwrap();
        let norm = Normalization::new(vec![0.5], vec![0.25]).unwrap();
        let cfg = LoaderConfig::train(1, 3)
            .normalized(norm.clone())
            .augmented(1, true);
        let loader = Loader::new(&d, cfg).unwrap();
        let v = |x: u8| norm.apply(0, x);
        let mut seen = std::collections::HashSet::new();
        for epoch in 0..64 {
            let b = loader.epoch(epoch).next().unwrap();
            assert_eq!(
                loader.epoch(epoch).next().unwrap(),
                b,
                "epoch {epoch} not reproducible"
            );
            let t = Transform::sample(3, epoch, 0, 1, true);
            assert!(t.dy.abs() <= 1 && t.dx.abs() <= 1);
            // Height 1: any vertical shift leaves only padding.
            let mut want: Vec<f32> = if t.dy != 0 {
                vec![v(0); 4]
            } else {
                match t.dx {
                    -1 => vec![v(0), v(10), v(20), v(30)],
                    0 => vec![v(10), v(20), v(30), v(40)],
                    _ => vec![v(20), v(30), v(40), v(0)],
                }
            };
            if t.flip {
                want.reverse();
            }
            assert_eq!(b.images, want, "epoch {epoch}, {t:?}");
            seen.insert((t.dy, t.dx, t.flip));
        }
        // 64 epochs draw most of the 18 possible transforms.
        assert!(seen.len() >= 12, "{seen:?}");
    }

    #[test]
    fn eval_loader_never_shuffles_or_augments() {
        let d = counting(9);
        let cfg = LoaderConfig::eval(4);
        assert!(!cfg.shuffle && !cfg.flip && cfg.crop_padding == 0);
        let loader = Loader::new(&d, cfg).unwrap();
        assert_eq!(all_indices(&loader, 7), (0..9).collect::<Vec<_>>());
        assert_eq!(loader.epoch(0).next(), loader.epoch(5).next());
    }

    #[test]
    fn bad_configs_are_rejected() {
        let d = counting(3);
        let err = Loader::new(&d, LoaderConfig::eval(0))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "invalid loader: batch size must be at least 1");
        let three = Normalization::identity(3);
        let err = Loader::eval(&d, 2, Some(three)).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid loader: normalisation has 3 channels but `count` has 1"
        );
        let loader = Loader::new(&d, LoaderConfig::eval(2)).unwrap();
        let err = loader.batch_of(0, &[0, 3]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid batch: sample index 3 is beyond `count` (3 samples)"
        );
    }

    #[test]
    fn images_array_keeps_nchw_layout() {
        let d = counting(3);
        let loader = Loader::new(&d, LoaderConfig::eval(3)).unwrap();
        let a = loader.epoch(0).next().unwrap().images_array();
        assert_eq!(a.shape(), &[3, 1, 1, 2]);
        assert_eq!(a[[2, 0, 0, 1]], 253.0 / 255.0);
    }

    #[test]
    fn empty_limit_yields_no_batches() {
        let d = counting(3);
        let loader = Loader::new(&d, LoaderConfig::train(2, 0).limited(Some(0))).unwrap();
        assert_eq!(loader.num_batches(), 0);
        assert_eq!(loader.epoch(0).count(), 0);
    }

    #[test]
    fn embedded_subset_normalises_to_zero_mean_unit_std() {
        let splits = crate::source::load_embedded_subset().unwrap();
        let norm = splits.normalization.clone();
        let loader = Loader::eval(&splits.train, 128, Some(norm)).unwrap();
        assert_eq!(loader.num_batches(), 79);
        let (mut sum, mut sq, mut n) = (0f64, 0f64, 0usize);
        for batch in loader.epoch(0) {
            assert_eq!(batch.shape[1..], [1, 28, 28]);
            n += batch.images.len();
            for &x in &batch.images {
                sum += f64::from(x);
                sq += f64::from(x) * f64::from(x);
            }
        }
        assert_eq!(n, 10_000 * 784);
        let mean = sum / n as f64;
        let std = (sq / n as f64 - mean * mean).sqrt();
        assert!(mean.abs() < 1e-5, "mean {mean}");
        assert!((std - 1.0).abs() < 1e-5, "std {std}");
    }
}
