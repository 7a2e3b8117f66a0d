//! Framework-free core of shears: the graph IR and everything that only reads or rewrites it.

pub mod artifact;
pub mod builder;
pub mod cost;
pub mod error;
pub mod graph;
pub mod ops;
pub mod reference;
pub mod shape;
pub mod sparsity;
pub mod structured;
pub mod weights;
pub mod zoo;

pub use artifact::{Model, load_model, save_model};
pub use builder::GraphBuilder;
pub use cost::{Convention, Cost, cost};
pub use error::{CoreError, Result};
pub use graph::{Graph, Input, Node, Op, ParamKind, ParamSpec};
pub use shape::{Shapes, infer_shapes};
pub use weights::{Masks, Weights, init_weights};
