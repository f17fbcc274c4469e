//! Kubernetes' name rules (apimachinery `validation`): DNS-1123 labels and subdomains, qualified
//! names (label and annotation keys), label values and ConfigMap/Secret keys, each with
//! Kubernetes' own wording. Shared by the API (admission) and the node (which checks again
//! before any of these strings becomes part of a host path). Pure code.

/// Kubernetes' message for a string that is not a DNS-1123 label.
pub const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// Kubernetes' message for a string that is not a DNS-1123 subdomain.
pub const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// The total size of an object's annotations (keys and values), as kube-apiserver limits it.
pub const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// Is `s` a DNS-1123 label (namespaces, container and volume names)?
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Is `s` a DNS-1123 subdomain (most object names)?
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Could `s` be an object's uid (a UUID as the API server makes them: letters, digits, '-')?
pub fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the shape of a qualified name and a label value.
fn is_qualified_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Why `key` is not a qualified name (`[prefix/]name`, the form of label and annotation keys),
/// in Kubernetes' words; empty when it is one.
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        None => (None, key),
        Some((p, n)) if !n.contains('/') => (Some(p), n),
        Some(_) => {
            errs.push(format!("a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errs;
        }
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else if !is_dns1123_subdomain(p) {
            errs.push(format!("prefix part {SUBDOMAIN_MSG}"));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    } else if !is_qualified_shape(name) {
        errs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errs
}

/// Why `v` is not a label value, in Kubernetes' words; empty when it is one.
pub fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_qualified_shape(v) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// Why `k` is not a ConfigMap or Secret key (a file name in a volume), in Kubernetes' words;
/// empty when it is one. `.`, `..` and names starting with `..` (the kubelet's `..data`) are
/// refused, so no key can step out of the volume or over the kubelet's own entries.
pub fn config_key_errors(k: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if k.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if k.is_empty()
        || !k
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        errs.push(CONFIG_KEY_MSG.to_string());
    }
    if k == "." {
        errs.push("must not be '.'".to_string());
    } else if k == ".." {
        errs.push("must not be '..'".to_string());
    } else if k.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Why `name` is not an environment variable name; empty when it is. Kubernetes 1.32's rule
/// (`RelaxedEnvironmentVariableValidation`, on by default since 1.32): printable ASCII but '='.
pub fn env_var_name_errors(name: &str) -> Vec<String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| (b' '..=b'~').contains(&c) && c != b'=');
    if ok {
        Vec::new()
    } else {
        vec!["a valid environment variable name must consist only of printable ASCII characters other than '='".to_string()]
    }
}

/// Why `p` is not a relative path for a file in a volume (`items[].path`, `subPath`): in
/// Kubernetes' words (`validateLocalDescendingPath`); empty when it is one.
pub fn local_descending_path_errors(p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if p.starts_with('/') {
        errs.push("must be a relative path".to_string());
    }
    if p.split('/').any(|part| part == "..") {
        errs.push("must not contain '..'".to_string());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        // (input, dns label, dns subdomain)
        let cases: &[(&str, bool, bool)] = &[
            ("web", true, true),
            ("a-1", true, true),
            ("a.b", false, true),
            ("", false, false),
            ("-a", false, false),
            ("A", false, false),
            ("/etc", false, false),
            ("..", false, false),
            ("a/b", false, false),
            (&"a".repeat(64), false, false),
            (&format!("{}.b", "a".repeat(63)), false, true),
        ];
        for (s, label, sub) in cases {
            assert_eq!(is_dns1123_label(s), *label, "label {s:?}");
            assert_eq!(is_dns1123_subdomain(s), *sub, "subdomain {s:?}");
        }
    }

    #[test]
    fn keys_and_values_table() {
        // (input, valid label key, valid label value, valid config key)
        let long = "a".repeat(64);
        let cases: &[(&str, bool, bool, bool)] = &[
            ("app", true, true, true),
            ("app.kubernetes.io/name", true, false, false),
            ("My_Key.1", true, true, true),
            ("", false, true, false),
            ("/x", false, false, false),
            ("a/b/c", false, false, false),
            ("-x", false, false, true),
            (".", false, false, false),
            ("..", false, false, false),
            ("..data", false, false, false),
            ("a b", false, false, false),
            (&long, false, false, true),
        ];
        for (s, key, value, config) in cases {
            assert_eq!(qualified_name_errors(s).is_empty(), *key, "key {s:?}");
            assert_eq!(label_value_errors(s).is_empty(), *value, "value {s:?}");
            assert_eq!(config_key_errors(s).is_empty(), *config, "config {s:?}");
        }
        assert_eq!(
            config_key_errors(".."),
            vec!["must not be '..'".to_string()]
        );
    }

    #[test]
    fn env_names_table() {
        for (n, ok) in [
            ("A", true),
            ("my.env-name", true),
            ("1A", true),
            ("A B", true),
            ("", false),
            ("A=B", false),
            ("A\nB", false),
            ("Ä", false),
        ] {
            assert_eq!(env_var_name_errors(n).is_empty(), ok, "{n:?}");
        }
    }

    #[test]
    fn local_paths_table() {
        let cases: &[(&str, bool)] = &[
            ("a/b", true),
            ("a", true),
            ("/etc", false),
            ("../x", false),
            ("a/../../b", false),
            ("a/..", false),
            ("..a", true),
        ];
        for (p, ok) in cases {
            assert_eq!(local_descending_path_errors(p).is_empty(), *ok, "{p:?}");
        }
    }
}
