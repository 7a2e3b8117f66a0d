//! Burn forward of ShuffleNet's channel shuffle: blocks of channels interleaved by a reshape to
//! `[N, g, C/g, H, W]`, a swap of the two channel axes and a reshape back.

use burn::tensor::Tensor;

pub fn forward(x: Tensor<4>, groups: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let blocks: Tensor<5> = x.reshape([n, groups, c / groups, h, w]);
    blocks.swap_dims(1, 2).reshape([n, c, h, w])
}
