//! Helpers shared by the ONNX tests.

use ndarray::ArrayD;

/// Largest absolute difference between two arrays of the same shape.
pub fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
