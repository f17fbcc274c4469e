//! The gate every API request passes before its handler: who is it (a client certificate, else
//! a bearer token; none is 401), whom does it act as (impersonation, each asked attribute
//! authorized), and may that user do what it asks (RBAC, with kube-apiserver's 403). The user is
//! then in the request's extensions and in [`REQUEST_USER`] around the handler; with
//! `--audit-log`, each request's record is written here.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{audit, ApiError, AppState};
use crate::auth::rbac::{self, Attributes, UserInfo};

tokio::task_local! {
    /// The user of the request being served (set by [`authenticate`] around the handler), for
    /// the checks that depend on who writes (RBAC escalation). Unset for the server's own
    /// writes (bootstrap).
    pub(crate) static REQUEST_USER: UserInfo;
}

/// The user a client certificate of the connection names (set by the listener, read by
/// `authenticate`).
#[derive(Clone, Debug)]
pub struct ClientCertUser(pub UserInfo);

/// The address a request's connection comes from (set by the listener).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Every request but `/cacerts` and the health checks: who is it (a client certificate, else a
/// bearer token; none is 401), whom does it act as (impersonation, each asked attribute
/// authorized), and may that user do what it asks (RBAC). Only then does a handler run; the
/// user is in the request's extensions. With `--audit-log`, every request's record is written.
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(audit) = state.audit.clone() else {
        return gate(&state, req, next).await.0;
    };
    let received = jiff::Timestamp::now();
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let source = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let (resp, who) = gate(&state, req, next).await;
    let long_running =
        matches!(&who.attrs, Some(Attributes::Resource { verb, .. }) if verb == "watch");
    audit.record(&audit::Record {
        user: who.user.as_ref(),
        impersonator: who.impersonator.as_ref(),
        attrs: who.attrs.as_ref(),
        method: &method,
        uri: &uri,
        source,
        user_agent: &agent,
        code: resp.status().as_u16(),
        long_running,
        received,
    });
    resp
}

/// Who a request turned out to be, as far as it got.
#[derive(Default)]
struct Who {
    user: Option<UserInfo>,
    impersonator: Option<UserInfo>,
    attrs: Option<Attributes>,
}

async fn gate(state: &Arc<AppState>, mut req: Request, next: Next) -> (Response, Who) {
    let mut who = Who::default();
    let revision = state.store.revision();
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cert = req
        .extensions()
        .get::<ClientCertUser>()
        .map(|c| c.0.clone());
    let user = match (cert, token) {
        (Some(user), _) => user,
        (None, Some(t)) => match state.authn.bearer(t, state.store.as_ref()).await {
            Some(user) => user,
            None => return (ApiError::Unauthorized.into_response(), who),
        },
        (None, None) => return (ApiError::Unauthorized.into_response(), who),
    };
    who.attrs = Some(crate::auth::request::attributes(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
    ));
    let user = match crate::auth::impersonate::parse(req.headers()) {
        Ok(None) => user,
        Ok(Some(imp)) => {
            for check in imp.checks() {
                if let Err(e) = authorize(state, &user, &check, revision).await {
                    who.user = Some(user);
                    return (e.into_response(), who);
                }
            }
            who.impersonator = Some(user);
            imp.user()
        }
        Err(e) => {
            who.user = Some(user);
            return (ApiError::BadRequest(e.to_string()).into_response(), who);
        }
    };
    who.user = Some(user.clone());
    if let Some(attrs) = &who.attrs {
        if let Err(e) = authorize(state, &user, attrs, revision).await {
            return (e.into_response(), who);
        }
    }
    req.extensions_mut().insert(user.clone());
    (REQUEST_USER.scope(user, next.run(req)).await, who)
}

/// Allow `attrs` for `user`, or the 403 that says who cannot do what.
async fn authorize(
    state: &AppState,
    user: &UserInfo,
    attrs: &Attributes,
    revision: u64,
) -> Result<(), ApiError> {
    if state
        .authorizer
        .authorize(user, attrs, revision)
        .await
        .is_some()
    {
        return Ok(());
    }
    let message = rbac::forbidden_message(user, attrs);
    Err(match attrs {
        Attributes::Resource {
            group,
            resource,
            name,
            ..
        } => ApiError::Denied {
            group: group.clone(),
            resource: resource.clone(),
            name: name.clone(),
            message,
        },
        Attributes::NonResource { .. } => ApiError::Denied {
            group: String::new(),
            resource: String::new(),
            name: String::new(),
            message,
        },
    })
}
