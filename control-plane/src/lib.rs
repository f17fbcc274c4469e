//! The skiff control plane: API server, store, scheduler and the built-in module store.
//! It never depends on wasmtime; node agents reach it only through the HTTPS API.

pub mod api;
pub mod apiservers;
pub mod auth;
pub mod controllers;
pub mod disruption;
pub mod leader;
pub mod metrics;
pub mod modules;
pub mod pki;
pub mod placement;
pub mod resources;
pub mod scheduler;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod usage;

pub use server::{start, RunningServer, ServerConfig, ServerError};
pub use store::StoreConfig;
