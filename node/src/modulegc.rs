//! The module cache's bound (`--module-cache-max-size`), as the kubelet's image GC: when the
//! modules and their compiled artifacts take more than the bound, the least recently used ones
//! that no container holds and that were not used in the last `--module-minimum-gc-age` (the
//! kubelet's `--image-minimum-gc-age`) are removed until they take at most `LOW_PERCENT` of it.
//!
//! Also the Node's `status.images`: the cached modules, largest first, at most `MAX_IMAGES`
//! (the kubelet's `nodeStatusMaxImages`), each named by its references and its digest.
//!
//! [`plan`] and [`images`] are pure and table-tested.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ContainerImage;

use crate::fetch::CachedModule;

/// Collection goes down to this share of the bound (the kubelet's low threshold).
const LOW_PERCENT: u64 = 80;
/// The most images a Node's status lists.
const MAX_IMAGES: usize = 50;

/// A cached module with what it costs on disk (blob and compiled artifacts).
#[derive(Clone, Debug)]
pub struct Entry {
    pub module: CachedModule,
    pub bytes: u64,
}

/// The modules to remove so that `entries` fit in `max` bytes. Pure.
pub fn plan(entries: &[Entry], max: u64, min_age: Duration, now: SystemTime) -> Vec<&Entry> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    if total <= max {
        return Vec::new();
    }
    let target = max / 100 * LOW_PERCENT;
    let mut candidates: Vec<&Entry> = entries
        .iter()
        .filter(|e| !e.module.in_use)
        .filter(|e| {
            now.duration_since(e.module.last_used)
                .is_ok_and(|age| age >= min_age)
        })
        .collect();
    candidates.sort_by_key(|e| e.module.last_used);
    let mut out = Vec::new();
    for e in candidates {
        if total <= target {
            break;
        }
        total = total.saturating_sub(e.bytes);
        out.push(e);
    }
    out
}

/// The Node's `status.images`. Pure.
pub fn images(entries: &[Entry]) -> Vec<ContainerImage> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.module.digest.cmp(&b.module.digest))
    });
    sorted
        .into_iter()
        .take(MAX_IMAGES)
        .map(|e| {
            let mut names = e.module.names.clone();
            names.push(e.module.digest.clone());
            ContainerImage {
                names: Some(names),
                size_bytes: i64::try_from(e.bytes).ok(),
            }
        })
        .collect()
}

/// Collect the node's cache down to `max` bytes; the images left.
pub fn collect(
    fetcher: &crate::fetch::Fetcher,
    runtime: &crate::runtime::Runtime,
    max: u64,
    min_age: Duration,
) -> Vec<ContainerImage> {
    let compiled = runtime.compiled_bytes();
    let entries: Vec<Entry> = fetcher
        .cached()
        .into_iter()
        .map(|m| Entry {
            bytes: m.bytes + compiled.get(&m.digest).copied().unwrap_or(0),
            module: m,
        })
        .collect();
    let mut removed = Vec::new();
    for e in plan(&entries, max, min_age, SystemTime::now()) {
        if fetcher.remove(&e.module) {
            runtime.forget(&e.module.digest);
            tracing::info!(digest = %e.module.digest, bytes = e.bytes, "module cache: removed a module no pod uses");
            removed.push(e.module.digest.clone());
        }
    }
    let left: Vec<Entry> = entries
        .into_iter()
        .filter(|e| !removed.contains(&e.module.digest))
        .collect();
    images(&left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, bytes: u64, age_s: u64, in_use: bool, now: SystemTime) -> Entry {
        Entry {
            module: CachedModule {
                digest: format!("sha256:{:064}", n),
                bytes,
                last_used: now - Duration::from_secs(age_s),
                in_use,
                names: vec![format!("m{n}:v1")],
            },
            bytes,
        }
    }

    #[test]
    fn plan_table() {
        let now = SystemTime::now();
        // (entries as (n, bytes, age in s, in use), max, removed in order)
        type Case = (&'static [(u8, u64, u64, bool)], u64, &'static [u8]);
        let cases: &[Case] = &[
            // Within the bound: nothing.
            (&[(1, 40, 999, false), (2, 60, 999, false)], 100, &[]),
            // Over: oldest first, down to 80 % (80 bytes).
            (
                &[
                    (1, 40, 500, false),
                    (2, 40, 900, false),
                    (3, 40, 700, false),
                ],
                100,
                &[2],
            ),
            (
                &[
                    (1, 40, 500, false),
                    (2, 40, 900, false),
                    (3, 40, 700, false),
                    (4, 30, 100, false),
                ],
                100,
                &[2, 3],
            ),
            // Held and recently used modules stay, even over the bound.
            (
                &[(1, 90, 999, true), (2, 50, 60, false), (3, 10, 999, false)],
                100,
                &[3],
            ),
            (&[(1, 200, 999, true)], 100, &[]),
            // One removal is enough when it brings the total to the low mark.
            (&[(1, 30, 999, false), (2, 80, 10, false)], 100, &[1]),
        ];
        for (spec, max, want) in cases {
            let entries: Vec<Entry> = spec
                .iter()
                .map(|(n, b, a, u)| entry(*n, *b, *a, *u, now))
                .collect();
            let got: Vec<String> = plan(&entries, *max, Duration::from_secs(120), now)
                .iter()
                .map(|e| e.module.digest.clone())
                .collect();
            let want: Vec<String> = want.iter().map(|n| format!("sha256:{:064}", n)).collect();
            assert_eq!(got, want, "{spec:?} in {max}");
        }
    }

    #[test]
    fn images_are_largest_first_and_named_by_digest_too() {
        let now = SystemTime::now();
        let entries: Vec<Entry> = (0..60)
            .map(|n| entry(n, u64::from(n) * 10, 0, false, now))
            .collect();
        let got = images(&entries);
        assert_eq!(got.len(), MAX_IMAGES);
        assert_eq!(got[0].size_bytes, Some(590));
        assert_eq!(
            got[0].names.as_deref(),
            Some(&["m59:v1".to_string(), format!("sha256:{:064}", 59)][..])
        );
    }
}
