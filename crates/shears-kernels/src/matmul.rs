//! A safe face for `gemm::gemm` on row-major slices.

/// A matrix view: element (r, c) is at `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> View<'a> {
        View {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> View<'a> {
        View {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
    fn last_index(&self, rows: usize, cols: usize) -> usize {
        (rows - 1) * self.row_stride + (cols - 1) * self.col_stride
    }
}

/// `out (m × n, row-major with row stride ldo) = [out +] a (m × k) · b (k × n)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    out: &mut [f32],
    ldo: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    matmul_into(m, n, k, a, b, out, (ldo, 1), accumulate, par)
}

/// [`matmul`] into an output with any strides: element (r, c) at `r * strides.0 + c * strides.1`.
/// gemm's micro-kernels want the output and the left operand with unit stride down a column;
/// callers pick layouts so that holds (see the weight gradient).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    out: &mut [f32],
    strides: (usize, usize),
    accumulate: bool,
    par: gemm::Parallelism,
) {
    let (ldo, cso) = strides;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    out[r * ldo + c * cso] = 0.0;
                }
            }
        }
        return;
    }
    assert!(
        a.last_index(m, k) < a.data.len(),
        "matmul: lhs view out of bounds"
    );
    assert!(
        b.last_index(k, n) < b.data.len(),
        "matmul: rhs view out of bounds"
    );
    assert!(
        (m - 1) * ldo + (n - 1) * cso < out.len(),
        "matmul: output view out of bounds"
    );
    // SAFETY: the three asserts above keep every index gemm touches inside its slice, and `out`
    // is borrowed mutably, so it aliases neither input. Callers never give overlapping output
    // strides (every (r, c) has its own element).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            cso as isize,
            ldo as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
