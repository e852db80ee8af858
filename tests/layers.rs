//! The library's layers import downwards only:
//! base (`clock`, `error`, `id`, `limits`, `sync`) <- `wire` <- `link` <- `messaging`
//! <- `node`. This reads every `crate::` path in the code (comments aside)
//! of each file of `src/` and fails on one that points up a layer, so an
//! import cycle between layers cannot come back unnoticed.

use std::path::{Path, PathBuf};

/// The layers, bottom first: a folder, or the base's files.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "clock", "error", "id", "identity", "limits", "meta", "stats", "sync",
        ],
    ),
    ("wire", &["wire"]),
    ("link", &["link"]),
    ("messaging", &["messaging"]),
    ("node", &["node"]),
];

/// Files above every layer: the crate root (which re-exports the public
/// API), the fuzzing entry points (which test the wire) and the
/// benchmarks' (which run a node's parts alone).
const ABOVE: &[&str] = &["lib.rs", "fuzzing.rs", "bench.rs"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment of every `crate::` path on `line`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let seg: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // `crate::{a, b}` names several.
        if seg.is_empty() && after.starts_with('{') {
            let inner = &after[1..after.find('}').unwrap_or(after.len())];
            for part in inner.split(',') {
                let seg = part.trim().split("::").next().unwrap_or("").to_string();
                if !seg.is_empty() {
                    found.push(seg);
                }
            }
        } else {
            found.push(seg);
        }
        rest = after;
    }
    found
}

#[test]
fn imports_point_down_the_layers_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files in {src:?}",
        files.len()
    );
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let name = rel.to_string_lossy().replace('\\', "/");
        if ABOVE.contains(&name.as_str()) {
            continue;
        }
        let top = name.split('/').next().unwrap().trim_end_matches(".rs");
        let mine = layer_of(top).unwrap_or_else(|| {
            panic!("src/{name} is in no layer: add `{top}` to LAYERS in tests/layers.rs")
        });
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for module in crate_paths(line) {
                let Some(theirs) = layer_of(&module) else {
                    upward.push(format!(
                        "src/{name}:{}: `crate::{module}` is in no layer",
                        n + 1
                    ));
                    continue;
                };
                if theirs > mine {
                    upward.push(format!(
                        "src/{name}:{}: {} imports `crate::{module}` from {} above it",
                        n + 1,
                        LAYERS[mine].0,
                        LAYERS[theirs].0
                    ));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_every_form_of_path() {
    assert_eq!(crate_paths("use crate::node::mesh::Mesh;"), ["node"]);
    assert_eq!(
        crate_paths("use crate::{link, wire::frame};"),
        ["link", "wire"]
    );
    assert_eq!(
        crate_paths("let x = crate::messaging::f(crate::sync::lock(&m));"),
        ["messaging", "sync"]
    );
}
