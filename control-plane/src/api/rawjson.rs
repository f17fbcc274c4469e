//! Serving stored objects without parsing them: a scanner finds the top-level members of a
//! stored JSON object, and a list item or a watch event's object is written by copying them,
//! minus `apiVersion` and `kind` (list items carry neither; an event's object gets the served
//! ones first), with `metadata.resourceVersion` added. Pure code.

/// One top-level member: where its key starts, where its value starts and ends.
struct Member {
    start: usize,
    key: (usize, usize),
    value: (usize, usize),
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at the quote at `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The top-level members of a JSON object, or None when `b` is not one.
fn members(b: &[u8]) -> Option<Vec<Member>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let colon = skip_ws(b, key_end);
        if b.get(colon) != Some(&b':') {
            return None;
        }
        let vstart = skip_ws(b, colon + 1);
        let vend = skip_value(b, vstart)?;
        out.push(Member {
            start: i,
            key: (i + 1, key_end - 1),
            value: (vstart, vend),
        });
        i = skip_ws(b, vend);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some(out),
            _ => return None,
        }
    }
}

/// Append `data` (a stored object) to `out` as a list item at revision `rv`. Returns false
/// (and appends nothing) when the bytes are not an object with an object `metadata`.
pub fn list_item(data: &[u8], rv: u64, out: &mut Vec<u8>) -> bool {
    write(data, None, rv, out)
}

/// Append `data` (a stored object) to `out` as the served object of `kind` and `api_version`
/// at revision `rv`; false (and nothing appended) as for [`list_item`].
pub fn object(data: &[u8], kind: &str, api_version: &str, rv: u64, out: &mut Vec<u8>) -> bool {
    write(data, Some((kind, api_version)), rv, out)
}

fn write(data: &[u8], head: Option<(&str, &str)>, rv: u64, out: &mut Vec<u8>) -> bool {
    let Some(ms) = members(data) else {
        return false;
    };
    let Some(meta) = ms.iter().find(|m| &data[m.key.0..m.key.1] == b"metadata") else {
        return false;
    };
    if data.get(meta.value.0) != Some(&b'{') {
        return false;
    }
    out.push(b'{');
    let mut first = true;
    if let Some((kind, api_version)) = head {
        for (key, value) in [("kind", kind), ("apiVersion", api_version)] {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            // A string's JSON encoding cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
        }
    }
    for m in &ms {
        let key = &data[m.key.0..m.key.1];
        if key == b"apiVersion" || key == b"kind" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        if key == b"metadata" {
            out.extend_from_slice(b"\"metadata\":{\"resourceVersion\":\"");
            out.extend_from_slice(rv.to_string().as_bytes());
            out.push(b'"');
            let inner = &data[m.value.0 + 1..m.value.1];
            if inner.iter().any(|c| !c.is_ascii_whitespace() && *c != b'}') {
                out.push(b',');
            }
            out.extend_from_slice(inner);
        } else {
            out.extend_from_slice(&data[m.start..m.value.1]);
        }
    }
    out.push(b'}');
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn list_items_match_a_parse_and_rewrite() {
        let cases = vec![
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "}{\"metadata\":{"}}, "spec": {"containers": [{"name": "c", "args": ["[", "]", "\\\""]}]}, "status": {}}),
            json!({"kind": "ConfigMap", "metadata": {}, "data": {"k": "v"}, "immutable": true, "n": -1.5e3}),
            json!({"metadata": {"name": "only"}}),
        ];
        for obj in cases {
            for bytes in [
                serde_json::to_vec(&obj).unwrap(),
                serde_json::to_vec_pretty(&obj).unwrap(),
            ] {
                let mut out = Vec::new();
                assert!(list_item(&bytes, 42, &mut out), "{obj}");
                let got: Value = serde_json::from_slice(&out).expect("valid JSON");
                let mut want = obj.clone();
                let m = want.as_object_mut().unwrap();
                m.remove("apiVersion");
                m.remove("kind");
                want["metadata"]["resourceVersion"] = json!("42");
                assert_eq!(got, want);
                // As a watch event's object: the served kind and apiVersion replace the stored.
                let mut out = Vec::new();
                assert!(object(&bytes, "Pod", "v1", 42, &mut out), "{obj}");
                let got: Value = serde_json::from_slice(&out).expect("valid JSON");
                want["kind"] = json!("Pod");
                want["apiVersion"] = json!("v1");
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn refuses_what_is_not_an_object_with_metadata() {
        for bad in [
            &b"[1,2]"[..],
            b"{\"metadata\": 3}",
            b"{\"a\": 1",
            b"{\"spec\": {}}",
            b"",
        ] {
            let mut out = Vec::new();
            assert!(
                !list_item(bad, 1, &mut out),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(!object(bad, "Pod", "v1", 1, &mut out));
            assert!(out.is_empty());
        }
    }
}
