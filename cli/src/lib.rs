//! The `bramble` command's library: the built-in frameworks (pi, factorial, hello, http),
//! their executors, the operator views (over `bramble-client`), and the throwaway demo cluster.
//! `main.rs` only parses arguments and calls in here.

pub mod bench;
pub mod demo;
pub mod display;
pub mod frameworks;
pub mod node;
pub mod ops;
pub mod pi;
pub mod progress;
pub mod run;
