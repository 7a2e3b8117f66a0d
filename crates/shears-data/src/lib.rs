//! Datasets and loaders for shears, free of any deep-learning framework.
//!
//! # Reading
//! - [`load`]`(kind, dir) -> Result<DataSplits>` finds and reads a [`DatasetKind`]:
//!   `fashion-mnist-subset` (embedded in the binary, 10,000 train / 2,000 test),
//!   `fashion-mnist` (`dir`, else `$SHEARS_DATA_DIR/fashion-mnist`, else
//!   `/usr/share/datasets/fashion-mnist`), `mnist`, `cifar10`, `cifar100` (`dir` or
//!   `$SHEARS_DATA_DIR/<name>`). [`load_from`] takes the data root explicitly; [`search_dirs`]
//!   lists where it looks.
//! - `image-folder`: the user's own images, `DIR/train/CLASS/*.png|jpg` and `DIR/test/...`
//!   ([`folder::read_image_folder`]`(dir, shape)`), resized and centre-cropped to the model's
//!   input, normalised by the training split's statistics.
//! - Format readers: [`idx::read_idx_dataset`] (IDX, gzip or raw by magic bytes) and
//!   [`cifar::read_cifar_files`] (CIFAR-10 / CIFAR-100 binary, fine labels). A bad file fails
//!   with [`DataError`] naming the file and what is wrong.
//!
//! # Data
//! - [`Dataset`]: raw bytes `N x [C, H, W]` (CHW), `u16` labels, class count, name.
//! - [`DataSplits`] `{ train, test, normalization }`; [`Normalization`] holds per-channel
//!   mean/std on the [0, 1] scale (published constants for known sets, else train statistics).
//!
//! # Batching
//! - [`Loader::new`]`(&dataset, LoaderConfig)`, [`Loader::eval`]`(&dataset, batch, norm)`;
//!   [`Loader::epoch`]`(e)` iterates [`Batch`]es. Everything random is a pure function of
//!   `(seed, epoch, sample index)`: a run resumed at epoch `k` sees the same batches.
//! - [`Batch`] `{ images: Vec<f32>, labels: Vec<i64>, shape: [N, C, H, W], indices }`: images
//!   contiguous in NCHW order, ready for `TensorData::new(images, shape)`; labels are `i64`,
//!   the element type of integer tensors.
//! - Per pixel: `x/255`, then `(x - mean[c]) / std[c]`; random crop pads with black (byte 0,
//!   normalised like any pixel, as torchvision pads before normalising) then flips.

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod file;
pub mod folder;
pub mod idx;
pub mod loader;
mod seed;
pub mod source;

pub use augment::Transform;
pub use dataset::{DataSplits, Dataset, Normalization};
pub use error::{DataError, Result};
pub use folder::read_image_folder;
pub use loader::{Batch, Batches, Loader, LoaderConfig};
pub use source::{DatasetKind, load, load_embedded_subset, load_from, load_sized, search_dirs};
