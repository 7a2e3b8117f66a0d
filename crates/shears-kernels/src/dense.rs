//! A fully connected layer's three passes on row-major matrices: `y = x·W + b` with the weight
//! held `[inputs][outputs]` (the engine's layout), the input gradient `dy·Wᵀ`, the weight
//! gradient `xᵀ·dy` and the bias gradient (the column sums of `dy`).
//!
//! Burn's flex backend splits a product over threads only above 192³ multiply-adds, so
//! LeNet-5's 64 × 400 × 120 layer ran on one thread while the other waited; these hand gemm the
//! pool from a quarter of a million, and add the bias and sum its gradient in the same call
//! instead of in separate single-threaded tensor ops.

use crate::matmul::{View, matmul};
use crate::parallel::threads;

/// The shape of one fully connected layer applied to `rows` vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseShape {
    pub rows: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl DenseShape {
    fn parallelism(&self) -> gemm::Parallelism {
        let work = self.rows * self.inputs * self.outputs;
        if threads() > 1 && work >= 1 << 18 {
            gemm::Parallelism::Rayon(threads())
        } else {
            gemm::Parallelism::None
        }
    }
    fn check(&self, x: usize, w: usize, y: usize) {
        assert_eq!(x, self.rows * self.inputs, "dense: input length, {self:?}");
        assert_eq!(
            w,
            self.inputs * self.outputs,
            "dense: weight length, {self:?}"
        );
        assert_eq!(
            y,
            self.rows * self.outputs,
            "dense: output length, {self:?}"
        );
    }
}

/// `y = x·W (+ bias on every row)`: `x` `[rows][inputs]`, `w` `[inputs][outputs]`.
pub fn dense_forward(s: DenseShape, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    s.check(x.len(), w.len(), y.len());
    if let Some(b) = bias {
        assert_eq!(b.len(), s.outputs, "dense: bias length");
        for row in y.chunks_exact_mut(s.outputs) {
            row.copy_from_slice(b);
        }
    }
    let (a, b) = (View::rows(x, s.inputs), View::rows(w, s.outputs));
    let accumulate = bias.is_some();
    matmul(
        s.rows,
        s.outputs,
        s.inputs,
        a,
        b,
        y,
        s.outputs,
        accumulate,
        s.parallelism(),
    );
}

/// `dx = dy·Wᵀ`: `[rows][inputs]`.
pub fn dense_backward_input(s: DenseShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    s.check(dx.len(), w.len(), dy.len());
    let (a, b) = (View::rows(dy, s.outputs), View::transposed(w, s.outputs));
    matmul(
        s.rows,
        s.inputs,
        s.outputs,
        a,
        b,
        dx,
        s.inputs,
        false,
        s.parallelism(),
    );
}

/// `dw = xᵀ·dy`: `[inputs][outputs]`.
pub fn dense_backward_weight(s: DenseShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    s.check(x.len(), dw.len(), dy.len());
    let (a, b) = (View::transposed(x, s.inputs), View::rows(dy, s.outputs));
    matmul(
        s.inputs,
        s.outputs,
        s.rows,
        a,
        b,
        dw,
        s.outputs,
        false,
        s.parallelism(),
    );
}

/// `db = Σ over rows of dy`, row after row (the same bits on any thread count).
pub fn dense_backward_bias(s: DenseShape, dy: &[f32], db: &mut [f32]) {
    assert_eq!(
        dy.len(),
        s.rows * s.outputs,
        "dense: output gradient length"
    );
    assert_eq!(db.len(), s.outputs, "dense: bias gradient length");
    db.fill(0.0);
    for row in dy.chunks_exact(s.outputs) {
        for (d, v) in db.iter_mut().zip(row) {
            *d += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All four passes against the sums written out in f64, on shapes on both sides of the
    /// threshold for splitting over threads.
    #[test]
    fn the_four_passes_follow_the_definition() {
        for (rows, inputs, outputs) in [(1, 1, 1), (3, 5, 7), (64, 400, 120), (17, 33, 9)] {
            let s = DenseShape {
                rows,
                inputs,
                outputs,
            };
            let wave = |n: usize, k: usize| -> Vec<f32> {
                (0..n).map(|i| ((i * k) % 97) as f32 / 48.0 - 1.0).collect()
            };
            let (x, w, b, dy) = (
                wave(rows * inputs, 31),
                wave(inputs * outputs, 17),
                wave(outputs, 7),
                wave(rows * outputs, 13),
            );
            let close = |got: &[f32], want: &[f64], what: &str| {
                for (i, (g, v)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (*g as f64 - v).abs() <= 1e-4 * (1.0 + v.abs()),
                        "{what} {i}: {g} vs {v}"
                    );
                }
            };
            let mut y = vec![f32::NAN; rows * outputs];
            dense_forward(s, &x, &w, Some(&b), &mut y);
            let want: Vec<f64> = (0..rows * outputs)
                .map(|o| {
                    let (r, c) = (o / outputs, o % outputs);
                    b[c] as f64
                        + (0..inputs)
                            .map(|i| x[r * inputs + i] as f64 * w[i * outputs + c] as f64)
                            .sum::<f64>()
                })
                .collect();
            close(&y, &want, "forward");
            let mut dx = vec![f32::NAN; rows * inputs];
            dense_backward_input(s, &dy, &w, &mut dx);
            let want: Vec<f64> = (0..rows * inputs)
                .map(|o| {
                    let (r, i) = (o / inputs, o % inputs);
                    (0..outputs)
                        .map(|c| dy[r * outputs + c] as f64 * w[i * outputs + c] as f64)
                        .sum()
                })
                .collect();
            close(&dx, &want, "input gradient");
            let mut dw = vec![f32::NAN; inputs * outputs];
            dense_backward_weight(s, &x, &dy, &mut dw);
            let want: Vec<f64> = (0..inputs * outputs)
                .map(|o| {
                    let (i, c) = (o / outputs, o % outputs);
                    (0..rows)
                        .map(|r| x[r * inputs + i] as f64 * dy[r * outputs + c] as f64)
                        .sum()
                })
                .collect();
            close(&dw, &want, "weight gradient");
            let mut db = vec![f32::NAN; outputs];
            dense_backward_bias(s, &dy, &mut db);
            let want: Vec<f64> = (0..outputs)
                .map(|c| (0..rows).map(|r| dy[r * outputs + c] as f64).sum())
                .collect();
            close(&db, &want, "bias gradient");
        }
    }
}
