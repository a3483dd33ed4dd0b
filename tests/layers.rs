//! The crate is a house in layers: every `use` of another file of the crate
//! (through `crate::`, `super::`, `self::` or a child module) names a file on
//! a lower layer than its own, as `src/lib.rs`'s layer table lists them.
//! Run alone with `cargo test --test layers`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A file's module path (`callback::outbox`; `""` for `lib.rs`).
type Module = String;

/// The layer table of `src/lib.rs`: rows `//! | N name | `a`, `b::c` |`.
fn layers(lib: &str) -> BTreeMap<Module, usize> {
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | ") else {
            continue;
        };
        let Some((layer, files)) = row.split_once(" | ") else {
            continue;
        };
        let Ok(n) = layer.split_whitespace().next().unwrap_or("").parse() else {
            continue;
        };
        for file in files.split('`').skip(1).step_by(2) {
            assert!(
                map.insert(file.to_string(), n).is_none(),
                "{file} is listed twice"
            );
        }
    }
    map
}

/// Every library source file under `src` (not `bin/`, not `tests.rs`).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("bin") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path.ends_with("tests.rs")
            && !path.ends_with("main.rs")
        {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code before the file's `#[cfg(test)] mod tests`, without comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths every `use` item of `code` names, braces flattened
/// (`use a::{b, c::d}` gives `a::b` and `a::c::d`).
fn use_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let start = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find(|p| trimmed.starts_with(*p))
            .map(|p| offset + (line.len() - trimmed.len()) + p.len());
        offset += line.len();
        if let Some(start) = start {
            let end = start + code[start..].find(';').unwrap_or(code.len() - start);
            // Renames (`x as y`) dropped, white space removed.
            let mut tokens = code[start..end].split_whitespace();
            let mut item = String::new();
            while let Some(token) = tokens.next() {
                if token == "as" {
                    let renamed = tokens.next().unwrap_or("");
                    item.push_str(
                        renamed.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'),
                    );
                } else {
                    item.push_str(token);
                }
            }
            flatten("", &item, &mut out);
        }
    }
    out
}

fn flatten(prefix: &str, item: &str, out: &mut Vec<String>) {
    match item.find('{') {
        None => out.push(format!("{prefix}{item}")),
        Some(open) => {
            let head = format!("{prefix}{}", &item[..open]);
            let inner = &item[open + 1..item.rfind('}').unwrap()];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        flatten(&head, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            flatten(&head, &inner[start..], out);
        }
    }
}

/// The file a `use` path names: the longest module prefix after `crate`,
/// `super`, `self` or a child module of `module`.
fn target(module: &str, path: &str, known: &BTreeMap<Module, usize>) -> Option<Module> {
    let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    let mut base: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
    match parts.first().copied() {
        Some("crate") => {
            base.clear();
            parts.remove(0);
        }
        Some("self") => {
            parts.remove(0);
        }
        Some("super") => {
            while parts.first() == Some(&"super") {
                parts.remove(0);
                base.pop();
            }
        }
        Some(first) => {
            let child = [base.clone(), vec![first]].concat().join("::");
            if !known.contains_key(&child) {
                return None; // another crate, or std
            }
        }
        None => return None,
    }
    let full: Vec<&str> = base.into_iter().chain(parts).collect();
    (0..=full.len())
        .rev()
        .map(|k| full[..k].join("::"))
        .find(|m| known.contains_key(m))
}

#[test]
fn every_import_names_a_lower_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut layer = layers(&lib);
    layer.insert(String::new(), usize::MAX); // lib.rs itself: the roof
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(&own) = layer.get(&module) else {
            problems.push(format!("{module} ({}) is in no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for path in use_paths(&code(&text)) {
            let Some(to) = target(&module, &path, &layer) else {
                continue;
            };
            if to != module && layer[&to] >= own {
                problems.push(format!(
                    "{module} (layer {own}) uses {path}: {to} is on layer {}",
                    layer[&to]
                ));
            }
        }
    }
    for listed in layer.keys().filter(|m| !m.is_empty()) {
        if !files.iter().any(|f| &module_of(&src, f) == listed) {
            problems.push(format!("{listed} is listed but has no file"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_import() {
    let known: BTreeMap<Module, usize> = [("a", 0), ("a::low", 0), ("b", 1)]
        .map(|(m, n)| (m.to_string(), n))
        .into();
    let paths = use_paths("use crate::{b::X, a::{low::Y, Z}};\nuse super::low::W;\nuse low::V;");
    assert_eq!(
        paths,
        [
            "crate::b::X",
            "crate::a::low::Y",
            "crate::a::Z",
            "super::low::W",
            "low::V"
        ]
    );
    assert_eq!(target("a", "crate::b::X", &known).as_deref(), Some("b"));
    assert_eq!(target("a::low", "super::Z", &known).as_deref(), Some("a"));
    assert_eq!(target("a", "low::V", &known).as_deref(), Some("a::low"));
    assert_eq!(target("a", "std::sync::Arc", &known), None);
}
