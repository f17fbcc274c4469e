//! Who may do what. `rbac` evaluates Kubernetes RBAC policy (pure); authentication of
//! requests, the review APIs and enforcement in the API build on it.

pub mod defaults;
pub mod rbac;
