//! One module per method, each a short pipeline over [`crate::steps`]:
//!
//! - [`unstructured`]: score -> masks, pruned after training (one-shot or iterative, with
//!   optional rewinding), at initialisation, or gradually during training.
//! - [`filter`]: channel pruning by a filter criterion (L1, L2, BN scale, random, Taylor) to a
//!   channel, params or MACs target, compacted and fine-tuned.
//! - [`slimming`]: Network Slimming.
//! - [`masksparsity`]: MaskSparsity, the L1 penalty on the masked channels' BatchNorm scales only.
//! - [`paam`]: PAAM, filter scores learned by attention from the filter weights, trained with
//!   the network from scratch under one global budget.
//! - [`ftwt`]: Fire Together Wire Together, per-input channel gates from self-supervised heads.

pub mod filter;
pub mod ftwt;
pub mod masksparsity;
pub mod paam;
pub mod slimming;
pub mod unstructured;
