//! What the ops' reference rules share: parameter lookup with masks applied and the checks and
//! views of ndarray values they all need. The reference interpreter builds a [`Params`] and
//! hands it to each op through [`super::RefCall`].

use crate::error::{CoreError, Result};
use crate::graph::Node;
use crate::weights::{Masks, Weights};
use ndarray::{ArrayD, ArrayViewD};
use std::borrow::Cow;

/// Weight lookup with masks applied.
/// Parameter lookup with masks applied, for the ops' reference forwards.
pub(crate) struct Params<'a> {
    pub(crate) weights: &'a Weights,
    pub(crate) masks: Option<&'a Masks>,
}

impl Params<'_> {
    pub(crate) fn get(&self, name: &str) -> Result<Cow<'_, ArrayD<f32>>> {
        let w = self
            .weights
            .get(name)
            .ok_or_else(|| CoreError::tensor(name, "missing from the weights"))?;
        match self.masks.and_then(|m| m.get(name)) {
            Some(m) => Ok(Cow::Owned(
                ndarray::Zip::from(w)
                    .and(m)
                    .map_collect(|&v, &keep| if keep { v } else { 0.0 }),
            )),
            None => Ok(Cow::Borrowed(w)),
        }
    }
}

/// A contiguous row-major copy (or borrow) of an array's data.
pub(crate) fn contiguous<'a>(a: &'a ArrayViewD<'a, f32>) -> Cow<'a, [f32]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

pub(crate) fn dims4(node: &Node, x: &ArrayD<f32>) -> Result<[usize; 4]> {
    match x.shape() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        s => Err(CoreError::shape(
            &node.name,
            format!("expects a [N,C,H,W] input, got {s:?}"),
        )),
    }
}
