//! Module references as written in a container's `image`: `name[:tag]`, `name@sha256:<hex>`
//! (the built-in module store) or `host[:port]/repo[:tag|@digest]` (an OCI registry).

/// Errors of parsing an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// Empty reference.
    #[error("image is empty")]
    Empty,
    /// Characters or shape Kubernetes would not accept either.
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// Where a module comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// The control plane's built-in module store, by tag.
    Local { name: String, tag: String },
    /// The control plane's built-in module store, by digest (`sha256:<hex>`).
    LocalDigest { name: String, digest: String },
    /// An OCI registry reference.
    Registry {
        host: String,
        repository: String,
        reference: String,
    },
}

impl ImageRef {
    /// Parse an `image` field.
    pub fn parse(image: &str) -> Result<Self, ImageError> {
        let image = image.trim();
        if image.is_empty() {
            return Err(ImageError::Empty);
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImageError::Invalid(image.into(), "contains whitespace"));
        }
        let (first, rest) = match image.split_once('/') {
            Some((f, r)) => (f, Some(r)),
            None => (image, None),
        };
        let is_host =
            rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
        if is_host {
            let rest = rest.unwrap_or_default();
            let (repository, reference) = split_reference(rest)?;
            return Ok(ImageRef::Registry {
                host: first.to_string(),
                repository,
                reference,
            });
        }
        let (name, reference) = split_reference(image)?;
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
        {
            return Err(ImageError::Invalid(
                image.into(),
                "module names use lowercase letters, digits, '-', '_', '.' and '/'",
            ));
        }
        if let Some(d) = reference.strip_prefix('@') {
            validate_digest(d).map_err(|m| ImageError::Invalid(image.into(), m))?;
            return Ok(ImageRef::LocalDigest {
                name,
                digest: d.to_string(),
            });
        }
        Ok(ImageRef::Local {
            name,
            tag: reference,
        })
    }

    /// The module's short name: the last path segment of the repository.
    pub fn short_name(&self) -> &str {
        let full = match self {
            ImageRef::Local { name, .. } | ImageRef::LocalDigest { name, .. } => name,
            ImageRef::Registry { repository, .. } => repository,
        };
        full.rsplit('/').next().unwrap_or(full)
    }
}

/// A container's `imagePullPolicy`: when the node asks the module store what a tag names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the reference at every container start (the blob is still downloaded only when
    /// its digest is not cached).
    Always,
    /// Use the module the node already has for this reference; resolve only when it has none.
    IfNotPresent,
    /// Use only what the node has; never ask.
    Never,
}

impl PullPolicy {
    /// The values the API accepts, as Kubernetes spells them.
    pub const VALUES: [&'static str; 3] = ["Always", "IfNotPresent", "Never"];

    /// Parse an `imagePullPolicy` value (None for anything Kubernetes would reject).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }

    /// Kubernetes' default for an unset policy: `Always` for the tag `latest` (also when no tag
    /// is written), `IfNotPresent` for any other tag and for a digest.
    pub fn default_for(image: &ImageRef) -> Self {
        let latest = match image {
            ImageRef::Local { tag, .. } => tag == "latest",
            ImageRef::LocalDigest { .. } => false,
            ImageRef::Registry { reference, .. } => reference == "latest",
        };
        if latest {
            PullPolicy::Always
        } else {
            PullPolicy::IfNotPresent
        }
    }

    /// The container's policy: its `imagePullPolicy` when valid, else the default for `image`.
    pub fn of(policy: Option<&str>, image: &ImageRef) -> Self {
        policy
            .and_then(Self::parse)
            .unwrap_or_else(|| Self::default_for(image))
    }

    /// The value as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Split `repo[:tag]` or `repo@digest`; returns the tag (default `latest`) or `@digest`.
fn split_reference(s: &str) -> Result<(String, String), ImageError> {
    if let Some((repo, digest)) = s.split_once('@') {
        if repo.is_empty() {
            return Err(ImageError::Invalid(s.into(), "missing name"));
        }
        return Ok((repo.to_string(), format!("@{digest}")));
    }
    let (repo, tag) = match s.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (s, "latest"),
    };
    if repo.is_empty() || tag.is_empty() {
        return Err(ImageError::Invalid(s.into(), "missing name or tag"));
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || tag.len() > 128
    {
        return Err(ImageError::Invalid(
            s.into(),
            "tags use letters, digits, '-', '_' and '.', at most 128",
        ));
    }
    Ok((repo.to_string(), tag.to_string()))
}

/// Check a `sha256:<64 hex>` digest.
pub fn validate_digest(d: &str) -> Result<(), &'static str> {
    match d.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(())
        }
        _ => Err("digests are sha256:<64 lowercase hex digits>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(n: &str, t: &str) -> ImageRef {
        ImageRef::Local {
            name: n.into(),
            tag: t.into(),
        }
    }

    #[test]
    fn parse_table() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases: Vec<(String, Result<ImageRef, ()>)> = vec![
            ("hello".into(), Ok(local("hello", "latest"))),
            ("hello:1.0".into(), Ok(local("hello", "1.0"))),
            ("team/hello:v2".into(), Ok(local("team/hello", "v2"))),
            (
                format!("hello@{d}"),
                Ok(ImageRef::LocalDigest {
                    name: "hello".into(),
                    digest: d.clone(),
                }),
            ),
            ("hello@sha256:xyz".into(), Err(())),
            ("".into(), Err(())),
            ("Hello".into(), Err(())),
            ("hello:".into(), Err(())),
            ("he llo".into(), Err(())),
            (
                "localhost:5000/wasm/hello:1".into(),
                Ok(ImageRef::Registry {
                    host: "localhost:5000".into(),
                    repository: "wasm/hello".into(),
                    reference: "1".into(),
                }),
            ),
            (
                "ghcr.io/a/b".into(),
                Ok(ImageRef::Registry {
                    host: "ghcr.io".into(),
                    repository: "a/b".into(),
                    reference: "latest".into(),
                }),
            ),
        ];
        for (input, want) in cases {
            let got = ImageRef::parse(&input).map_err(|_| ());
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(
            ImageRef::parse("team/hello:v2").unwrap().short_name(),
            "hello"
        );
    }

    #[test]
    fn pull_policy_table() {
        let d = format!("sha256:{}", "a".repeat(64));
        let digest = format!("hello@{d}");
        let cases = [
            // (image, imagePullPolicy, policy)
            ("hello", None, PullPolicy::Always),
            ("hello:latest", None, PullPolicy::Always),
            ("hello:v1", None, PullPolicy::IfNotPresent),
            (digest.as_str(), None, PullPolicy::IfNotPresent),
            ("localhost:5000/a/b", None, PullPolicy::Always),
            ("localhost:5000/a/b:2", None, PullPolicy::IfNotPresent),
            ("hello", Some("IfNotPresent"), PullPolicy::IfNotPresent),
            ("hello:v1", Some("Always"), PullPolicy::Always),
            ("hello:v1", Some("Never"), PullPolicy::Never),
            ("hello:v1", Some("Sometimes"), PullPolicy::IfNotPresent),
        ];
        for (image, policy, want) in cases {
            let r = ImageRef::parse(image).unwrap();
            assert_eq!(PullPolicy::of(policy, &r), want, "{image} {policy:?}");
        }
        for v in PullPolicy::VALUES {
            assert_eq!(PullPolicy::parse(v).map(PullPolicy::as_str), Some(v));
        }
    }
}
