//! Services that stay up — Marathon's job, built in. An operator applies a spec
//! (`bramble service apply web.toml`: a command, how many instances, cpus/mem, ports, env,
//! constraints, a restart policy); the service scheduler keeps that many instances running,
//! replacing those that end (after a backoff) or are lost with their agent.
//!
//! - [`spec`]: the TOML spec, read and checked in one place (errors name the file and key);
//! - [`book`]: the pure core — specs, instances, and what to launch, kill or wait for;
//! - [`launch`]: the task an instance is launched as (a command, or its own custom executor);
//! - [`scheduler`]: the framework itself, on the SDK: specs from its key/value state in the
//!   master, offers in, launches and kills out, failing over under a framework id kept on disk.
//!
//! Specs are stored in the framework's own state in the master (`spec/<name>`), not in the
//! scheduler: they are durable with the master's store, readable and writable by operators
//! while the scheduler is down, and handed to the scheduler whenever it (re)subscribes.

pub mod book;
pub mod health;
pub mod launch;
pub mod probe;
pub mod scheduler;
pub mod spec;
pub mod status;

pub use scheduler::{
    load_framework_id, run_services, spec_key, ServiceScheduler, ServicesError,
    FAILOVER_TIMEOUT_SECS, FRAMEWORK_NAME, SPEC_PREFIX,
};
pub use spec::{Spec, SpecError};
