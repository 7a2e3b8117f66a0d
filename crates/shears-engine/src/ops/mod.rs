//! Burn forwards of the ops that have more than a line of arithmetic, one file per op family;
//! the executor's dispatch calls them. Each matches the reference forward in
//! `shears_core::reference` (tested in `tests/ops.rs`).

pub mod activation;
pub mod layernorm;
pub mod pool;
pub mod shuffle;
