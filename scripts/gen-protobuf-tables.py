#!/usr/bin/env python3
"""Generate control-plane/src/api/protobuf/k8s.tables: the protobuf field tables of every
Kubernetes kind, for decoding `application/vnd.kubernetes.protobuf` request bodies, with each
list field's strategic-merge-patch rule (its `+patchStrategy`/`+patchMergeKey` tags).

Field numbers and wire types come from the k8s-pb crate (prost code generated from
Kubernetes' own .proto files); JSON field names from the k8s-openapi crate (generated from
Kubernetes' OpenAPI schema), matched by their Rust field names, which both crates derive from
the same Go names. Both crates are read from cargo's registry; run `cargo fetch` first.

    python3 scripts/gen-protobuf-tables.py > control-plane/src/api/protobuf/k8s.tables

Output, tab-separated, one record per line:
    message <message>
    field  <message> <number> <json name> <type> <repeated: 0|1> <merge>
<merge> is how a strategic merge patch treats the list (`patchStrategy=merge`): its
`patchMergeKey`, `*` for a list of primitives merged as a set, `-` for a list replaced whole.
    kind   <apiVersion> <kind> <message>
Types: str bytes int bool double time microtime quantity intorstring raw duration
msg:<message> map:<value type>.
"""
import glob
import os
import re
import sys

REGISTRY = glob.glob(os.path.expanduser("~/.cargo/registry/src/*"))
PB_VERSION = "0.9.0"
OPENAPI_VERSION = "0.29.0"
# The newest Kubernetes version k8s-openapi knows: JSON names never change between versions,
# and a newer table only knows more fields.
OPENAPI_FEATURE = "v1_37"
# Stable API versions only (and the meta types every kind uses): alpha and beta kinds are
# not served.
UNSTABLE = re.compile(r"/v\d+(alpha|beta)\d*(/|$)")

SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "microtime",
    "apimachinery.pkg.apis.meta.v1.Duration": "duration",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "raw",
    "apimachinery.pkg.runtime.RawExtension": "raw",
    "apimachinery.pkg.api.resource.Quantity": "quantity",
    "apimachinery.pkg.util.intstr.IntOrString": "intorstring",
    # `[]string` types: a message of one repeated string, a JSON array.
    "api.authentication.v1.ExtraValue": "strlist",
    "api.authorization.v1.ExtraValue": "strlist",
    "api.certificates.v1.ExtraValue": "strlist",
}


def crate_dir(name, version):
    for r in REGISTRY:
        d = os.path.join(r, f"{name}-{version}")
        if os.path.isdir(d):
            return d
    sys.exit(f"{name} {version} is not in cargo's registry: run `cargo fetch`")


def module_of(path, root):
    rel = os.path.relpath(os.path.dirname(path), root)
    return rel.replace(os.sep, ".")


def resolve(rust_type, module):
    """A Rust type path in `module` as a message name."""
    t = rust_type.replace("::prost::alloc::boxed::Box<", "").rstrip(">").strip()
    t = t.replace("::core::option::Option<", "").replace("::prost::alloc::vec::Vec<", "")
    t = t.strip().rstrip(",").strip().rstrip(">").rstrip(",").strip()
    parts = t.split("::")
    mod = module.split(".")
    while parts and parts[0] == "super":
        parts.pop(0)
        mod.pop()
    if parts and parts[0] == "crate":
        parts.pop(0)
        mod = []
    return ".".join(mod + parts)


def prost_messages(root):
    """message -> [(number, rust field, kind, repeated, value type or None)]"""
    out = {}
    kinds = []
    for path in glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True):
        module = module_of(path, root)
        text = open(path).read()
        for m in re.finditer(r"pub struct (\w+) \{(?:\}|(.*?)\n\})", text, re.S):
            name, body = m.group(1), m.group(2) or ""
            fields = []
            attrs_at = list(re.finditer(r"#\[prost\(([^\]]*?)tag = \"(\d+)\"\)\]", body))
            for i, fm in enumerate(attrs_at):
                # This field's doc comment: the `///` lines after the previous declaration.
                before = body[(attrs_at[i - 1].end() if i > 0 else 0):fm.start()]
                doc = before.split("\n")
                last_pub = max([j for j, l in enumerate(doc) if l.strip().startswith("pub ")] or [-1])
                tags = dict(
                    re.match(r"\s*/// \+(\w+)=(\S+)", l).groups()
                    for l in doc[last_pub + 1:]
                    if re.match(r"\s*/// \+(\w+)=(\S+)", l)
                )
                end = attrs_at[i + 1].start() if i + 1 < len(attrs_at) else len(body)
                decl = re.sub(r"\s*///[^\n]*", "", body[fm.end():end])
                dm = re.match(r"\s*(?:#\[[^\n]*\]\s*)*pub (?:r#)?(\w+):\s*(.*?),?\s*$", decl, re.S)
                if dm is None:
                    sys.exit(f"cannot read {module}.{name}: {decl!r}")
                attrs, tag, field, ty = fm.group(1), int(fm.group(2)), dm.group(1), dm.group(2)
                ty = " ".join(ty.split())
                repeated = "repeated" in attrs
                kind = attrs.split(",")[0].strip()
                value = None
                bm = re.match(r'\s*btree_map = "(\w+), (\w+)"', attrs)
                if bm:
                    kind = "btree_map"
                    value_kind = bm.group(2)
                    if value_kind == "message":
                        value = resolve(ty.split(",", 1)[1].strip().rstrip(">"), module)
                    kind = "map:" + value_kind
                elif kind == "message":
                    value = resolve(ty, module)
                elif kind.startswith("bytes"):
                    kind = "bytes"
                merge = "-"
                if "merge" in tags.get("patchStrategy", "").split(","):
                    merge = tags.get("patchMergeKey", "*")
                fields.append((tag, field, kind, repeated, value, merge))
            out[f"{module}.{name}"] = fields
        for im in re.finditer(
            r"impl crate::Resource for (\w+) \{.*?API_VERSION: &'static str = \"([^\"]*)\";"
            r".*?KIND: &'static str = \"([^\"]*)\";.*?URL_PATH_SEGMENT: &'static str = \"([^\"]*)\";"
            r".*?type Scope = crate::(\w+);",
            text,
            re.S,
        ):
            kinds.append((im.group(2), im.group(3), f"{module}.{im.group(1)}", im.group(5)))
    return out, kinds


def json_names(root):
    """message -> {rust field: json name}"""
    out = {}
    for path in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True):
        module = module_of(path, root)
        text = open(path).read()
        sm = re.search(r"pub struct (\w+) \{", text)
        if not sm:
            continue
        # Keyed by the JSON name folded (lower case): k8s-pb spells acronyms its own way
        # (`u_id`, `non_resource_ur_ls`, `AwsElasticBlockStore...`).
        names = dict((js.lower(), js) for js in re.findall(r"\"([^\"]+)\" => Field::Key_\w+,", text))
        out[f"{module}.{sm.group(1)}".lower()] = names
    return out


def main():
    pb_root = os.path.join(crate_dir("k8s-pb", PB_VERSION), "src")
    oa_root = os.path.join(crate_dir("k8s-openapi", OPENAPI_VERSION), "src", OPENAPI_FEATURE)
    messages, kinds = prost_messages(pb_root)
    names = json_names(oa_root)
    # Messages reachable from the stable kinds and the request types kubectl sends.
    # CustomResourceDefinitions and APIServices come as JSON (kubectl applies them
    # unstructured); their schemas are not tables.
    roots = [
        k[2]
        for k in kinds
        if not UNSTABLE.search("/" + k[0]) and k[2].startswith("api.")
    ]
    roots += [
        "apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "api.policy.v1.Eviction",
        "api.autoscaling.v1.Scale",
        "api.core.v1.Binding",
        "api.authentication.v1.TokenRequest",
    ]
    seen, order, todo = set(), [], list(roots)
    while todo:
        m = todo.pop()
        if m in seen or m in SPECIAL:
            continue
        if m not in messages:
            sys.exit(f"message {m} not found in k8s-pb")
        seen.add(m)
        order.append(m)
        for (_, _, kind, _, value, _) in messages[m]:
            if value and value not in SPECIAL:
                todo.append(value)
    print("# @generated by scripts/gen-protobuf-tables.py from k8s-pb "
          f"{PB_VERSION} and k8s-openapi {OPENAPI_VERSION} ({OPENAPI_FEATURE}); do not edit.")
    # A message field with no JSON name is embedded (Go struct embedding, `json:",inline"`):
    # its fields appear in the parent's JSON, under the parent's names.
    def json_name(m, field):
        return names.get(m.lower(), {}).get(field.replace("_", "").lower())

    def embeds(parent, child):
        """Are all of `child`'s fields named in `parent`'s JSON (Go embedding)?"""
        theirs = names.get(parent.lower(), {})
        return all(
            f.replace("_", "").lower() in theirs or k == "message"
            for (_, f, k, _, _, _) in messages.get(child, [])
        )

    inline_parent = {}
    for m in order:
        for (tag, field, kind, repeated, value, _) in messages[m]:
            if (kind == "message" and json_name(m, field) is None and value not in SPECIAL
                    and embeds(m, value)):
                inline_parent[value] = m
    for child, parent in inline_parent.items():
        names.setdefault(child.lower(), {})
        for k, v in names.get(parent.lower(), {}).items():
            names[child.lower()].setdefault(k, v)
    missing = 0
    for m in sorted(order):
        print(f"message\t{m}")
        for (tag, field, kind, repeated, value, merge) in messages[m]:
            name = json_name(m, field)
            if name is None and kind == "message" and value in inline_parent:
                print(f"field\t{m}\t{tag}\t-\tinline:{value}\t0\t-")
                continue
            if name is None:
                # A field the OpenAPI schema of this version does not have.
                missing += 1
                print(f"# {m}.{field} ({tag}): not in k8s-openapi", file=sys.stderr)
                continue
            if kind == "message":
                ty = SPECIAL.get(value, "msg:" + value)
            elif kind.startswith("map:"):
                vk = kind[4:]
                if vk == "message":
                    vk = SPECIAL.get(value, "msg:" + value)
                ty = "map:" + {"string": "str"}.get(vk, vk)
            else:
                ty = {"string": "str", "int32": "int", "int64": "int", "bool": "bool",
                      "double": "double", "bytes": "bytes"}[kind]
            print(f"field\t{m}\t{tag}\t{name}\t{ty}\t{int(repeated)}\t{merge}")
    for (api_version, kind, m, scope) in sorted(kinds):
        if m in seen:
            print(f"kind\t{api_version}\t{kind}\t{m}")
    for (api_version, kind, m) in [("v1", "DeleteOptions", "apimachinery.pkg.apis.meta.v1.DeleteOptions"),
                                   ("meta.k8s.io/v1", "DeleteOptions", "apimachinery.pkg.apis.meta.v1.DeleteOptions"),
                                   ("policy/v1", "Eviction", "api.policy.v1.Eviction"),
                                   ("autoscaling/v1", "Scale", "api.autoscaling.v1.Scale"),
                                   ("v1", "Binding", "api.core.v1.Binding"),
                                   ("authentication.k8s.io/v1", "TokenRequest", "api.authentication.v1.TokenRequest")]:
        print(f"kind\t{api_version}\t{kind}\t{m}")
    print(f"{len(order)} messages, {missing} fields without a JSON name", file=sys.stderr)


main()
