//! Claims: values an object holds alone (a Service's cluster IP and node ports), stored as
//! objects of their own (`networking.k8s.io/ipaddresses/10.43.1.2`, as Kubernetes' `IPAddress`
//! objects) and written in one store transaction with their holder, so the store's existence
//! check, through its one writer, makes two holders of a value impossible however many creates
//! race. Which values an object holds and how free ones are chosen is its strategy's; here is
//! the IO.

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::strategy::Claim;
use crate::api::AppState;
use crate::resources::ResourceType;
use crate::store::{ObjectKey, StoreError, Write};

fn key(c: &Claim) -> ObjectKey {
    ObjectKey::new(c.resource, "", &c.name)
}

/// The claims held now by any object of `rt`'s kind (the claim objects in the store).
async fn held(state: &AppState, rt: &ResourceType) -> ApiResult<HashSet<Claim>> {
    let mut out = HashSet::new();
    for resource in rt.strategy.claim_resources() {
        let listing = state
            .store
            .list(resource, None)
            .await
            .map_err(|e| ApiError::from_store(e, resource, ""))?;
        out.extend(listing.objects.into_iter().map(|o| Claim {
            resource,
            name: o.key.name,
        }));
    }
    Ok(out)
}

/// Let the strategy fill in the values `obj` asks the server to choose; `own` are the claims
/// the object already holds (an update), which are not taken from it.
pub(super) async fn allocate(
    state: &AppState,
    rt: &ResourceType,
    name: &str,
    obj: &mut Value,
    own: &[Claim],
) -> ApiResult<()> {
    if rt.strategy.claim_resources().is_empty() {
        return Ok(());
    }
    let held = held(state, rt).await?;
    let taken = |c: &Claim| held.contains(c) && !own.contains(c);
    rt.strategy
        .allocate(obj, &taken)
        .map_err(|cause| ApiError::Invalid {
            kind: rt.kind.into(),
            name: name.into(),
            causes: vec![cause],
        })
}

/// The writes that move `holder` (namespace, name of an object of `rt`) from claims `old` to
/// `new`: a create for each new one (refused when someone else holds it), a release for each
/// given up.
pub(super) fn writes(
    rt: &ResourceType,
    holder: (&str, &str),
    old: &[Claim],
    new: &[Claim],
) -> ApiResult<Vec<Write>> {
    let mut out = Vec::new();
    for c in new.iter().filter(|c| !old.contains(c)) {
        let record = json!({
            "metadata": {"name": c.name, "creationTimestamp": super::rules::now_rfc3339()},
            "spec": {"parentRef": {
                "group": rt.group, "resource": rt.plural,
                "namespace": holder.0, "name": holder.1,
            }},
        });
        let data = serde_json::to_vec(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        out.push(Write::Create {
            key: key(c),
            data: Bytes::from(data),
        });
    }
    for c in old.iter().filter(|c| !new.contains(c)) {
        out.push(Write::Release { key: key(c) });
    }
    Ok(out)
}

/// The write of the holder alone, or a transaction of it and its claim writes.
pub(super) fn with_claims(primary: Write, claims: Vec<Write>) -> Write {
    if claims.is_empty() {
        primary
    } else {
        let mut all = vec![primary];
        all.extend(claims);
        Write::Txn(all)
    }
}

/// Is this store error a claim taken by someone else between allocation and commit (a
/// concurrent write won the race)?
pub(super) fn lost_race(e: &StoreError) -> bool {
    matches!(e, StoreError::Refused { index, source } if *index > 0 && matches!(**source, StoreError::AlreadyExists))
}

/// The store error of the holder's own write (a refused transaction's first write), as any
/// single write would have failed.
pub(super) fn own_error(e: StoreError) -> StoreError {
    match e {
        StoreError::Refused { index: 0, source } => *source,
        other => other,
    }
}

/// Write the claims of stored objects that lack them (a data dir from before claims were
/// stored): run at start-up, before anything allocates. Two objects holding one value (which
/// only such a data dir can have) keep it; the second one's claim is not written.
pub(crate) async fn repair(state: &AppState) -> ApiResult<()> {
    for rt in crate::resources::all()
        .into_iter()
        .filter(|r| !r.strategy.claim_resources().is_empty())
    {
        let listing = state
            .store
            .list(&rt.storage_key(), None)
            .await
            .map_err(|e| ApiError::from_store(e, &rt.qualified(), ""))?;
        let held = held(state, rt).await?;
        for o in listing.objects {
            let obj = super::materialize(rt, &o)?;
            let claims = rt.strategy.claims(&obj);
            let missing: Vec<Claim> = claims.into_iter().filter(|c| !held.contains(c)).collect();
            for w in writes(rt, (&o.key.namespace, &o.key.name), &[], &missing)? {
                match state.store.write(w).await {
                    Ok(_) | Err(StoreError::AlreadyExists) => {}
                    Err(e) => return Err(ApiError::from_store(e, &rt.qualified(), &o.key.name)),
                }
            }
        }
    }
    Ok(())
}
