//! The `bramble` command's library: the operator views (over `bramble-client`), first boot, the throwaway
//! demo cluster, the bench harness and the progress bar. The built-in frameworks and their
//! executors live in `bramble-frameworks`; `main.rs` only parses arguments and hands each
//! subcommand to its module under `commands/`.

pub mod bench;
pub mod demo;
pub mod display;
pub mod masters;
pub mod new_framework;
pub mod node;
pub mod ops;
pub mod progress;
pub mod run;
pub mod summary;
pub mod table;
