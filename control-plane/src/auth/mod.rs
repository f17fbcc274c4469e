//! Who may do what. `authn` maps credentials to users (static tokens, ServiceAccount tokens
//! signed by `satoken`, client certificates); `rbac` evaluates Kubernetes RBAC policy (pure);
//! `request` derives a request's attributes from its method and path (pure); `authorizer`
//! keeps the policy current from a store watch and decides every request.

pub mod authn;
pub mod authorizer;
pub mod defaults;
pub mod impersonate;
pub mod rbac;
pub mod request;
pub mod satoken;
