//! Burn forwards of the ops, one file per op family; the executor's dispatch calls them. The
//! executor keeps what spans nodes: the fusions it plans (BatchNorm folded into a conv, ReLU
//! and residual epilogues) and BatchNorm's training statistics in its running buffers. Each
//! forward matches the op's reference rule in `shears_core::ops` (`tests/executor.rs`).

pub mod activation;
pub mod conv;
pub mod layernorm;
pub mod linear;
pub mod pool;
pub mod shuffle;
pub mod tokens;
pub mod window;
