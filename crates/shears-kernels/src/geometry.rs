//! The shape of one convolution, shared by all its kernels.

/// Everything a convolution kernel needs to know about its shapes. Input `[batch, in_channels,
/// in_h, in_w]`, weight `[out_channels, in_channels / groups, kernel_h, kernel_w]`, output
/// `[batch, out_channels, out_h, out_w]`, all contiguous NCHW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// What the forward convolution does to each output value after the sum: add a per-channel bias,
/// add a residual value of the output's shape, clamp at zero. Fusing these saves one pass over
/// the output each.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl ConvGeometry {
    pub fn out_h(&self) -> usize {
        out_size(
            self.in_h,
            self.kernel[0],
            self.stride[0],
            self.padding[0],
            self.dilation[0],
        )
    }
    pub fn out_w(&self) -> usize {
        out_size(
            self.in_w,
            self.kernel[1],
            self.stride[1],
            self.padding[1],
            self.dilation[1],
        )
    }
    /// Input channels per group.
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }
    /// Output channels per group.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }
    /// Rows of one group's im2col matrix: input channels per group × kernel area.
    pub fn col_rows(&self) -> usize {
        self.in_per_group() * self.kernel[0] * self.kernel[1]
    }
    /// Output pixels per image and channel.
    pub fn out_pixels(&self) -> usize {
        self.out_h() * self.out_w()
    }
    pub fn in_pixels(&self) -> usize {
        self.in_h * self.in_w
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_pixels()
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_pixels()
    }
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.col_rows()
    }
    /// A 1x1 convolution with stride 1 and no padding: the input already is its im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }
    /// A 3x3 convolution at stride 1 with padding 1, no dilation and no groups: the "same"
    /// layer of VGG and ResNet, which the direct and small-map kernels handle.
    pub(crate) fn is_dense_same_3x3(&self) -> bool {
        self.kernel == [3, 3]
            && self.stride == [1, 1]
            && self.padding == [1, 1]
            && self.dilation == [1, 1]
            && self.groups == 1
    }
    /// One filter per input channel (MobileNet's depthwise convolution): run as a direct loop,
    /// a GEMM per channel would be 1 x k² x pixels.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// Panics with the mismatch when the geometry cannot describe a convolution; the engine
    /// builds geometries from shape-checked graphs, so this guards against bugs, not user input.
    pub(crate) fn validate(&self) {
        assert!(
            self.groups > 0
                && self.in_channels % self.groups == 0
                && self.out_channels % self.groups == 0,
            "conv geometry: {} in and {} out channels do not split into {} groups",
            self.in_channels,
            self.out_channels,
            self.groups
        );
        assert!(
            self.stride.iter().chain(&self.dilation).all(|&s| s > 0),
            "conv geometry: stride and dilation must be positive, got {:?}",
            self
        );
        let eff_kh = self.dilation[0] * (self.kernel[0] - 1) + 1;
        let eff_kw = self.dilation[1] * (self.kernel[1] - 1) + 1;
        assert!(
            self.in_h + 2 * self.padding[0] >= eff_kh && self.in_w + 2 * self.padding[1] >= eff_kw,
            "conv geometry: kernel larger than the padded input: {:?}",
            self
        );
    }
}

fn out_size(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> usize {
    (input + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1
}
