//! The crate's modules depend on each other without cycles, and the image formats depend on
//! the shared `image` module, never on each other or on the modules that drive them.
//!
//! Each source file is a node (`qcow2::writer`, `source`, ...). Its edges are the modules its
//! code names (outside its unit tests): `crate::a::b` paths, including `use` trees with
//! braces, `super::` paths, and paths through the child modules it declares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module name and code (comments and unit tests cut) of every file under `dir`.
fn read_modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("file name").to_string();
        let join = |name: &str| if prefix.is_empty() { name.to_string() } else { format!("{prefix}::{name}") };
        if path.is_dir() {
            read_modules(&path, &join(&stem), out);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let module = match stem.as_str() {
            "lib" => "crate".to_string(),
            "mod" => prefix.to_string(),
            _ => join(&stem),
        };
        let text = std::fs::read_to_string(&path).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String =
            code.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        out.insert(module, code);
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses a path after `crate::` (or `super::`, or a child's name) at the start of `s`:
/// `a::b::C`, `a::{self, b::C}`, `a::*`. Returns every full path it names.
fn paths(s: &str) -> Vec<Vec<String>> {
    fn tree(s: &[char], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *at < s.len() && s[*at].is_whitespace() {
                *at += 1;
            }
            if *at < s.len() && s[*at] == '{' {
                *at += 1;
                loop {
                    tree(s, at, &path, out);
                    // Skip ` as name` and whitespace up to the separator.
                    while *at < s.len() && s[*at] != ',' && s[*at] != '}' {
                        *at += 1;
                    }
                    if *at >= s.len() || s[*at] == '}' {
                        *at += 1;
                        return;
                    }
                    *at += 1;
                    while *at < s.len() && s[*at].is_whitespace() {
                        *at += 1;
                    }
                    if *at < s.len() && s[*at] == '}' {
                        *at += 1;
                        return;
                    }
                }
            }
            let start = *at;
            while *at < s.len() && (is_ident(s[*at]) || s[*at] == '*') {
                *at += 1;
            }
            let seg: String = s[start..*at].iter().collect();
            if !seg.is_empty() && seg != "self" && seg != "*" {
                path.push(seg);
            }
            if *at + 1 < s.len() && s[*at] == ':' && s[*at + 1] == ':' {
                *at += 2;
                continue;
            }
            out.push(path);
            return;
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    tree(&chars, &mut 0, &[], &mut out);
    out
}

/// The deepest module of `known` that `path` (absolute, without `crate`) lies in.
fn resolve(path: &[String], known: &BTreeSet<String>) -> String {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains(m))
        .unwrap_or_else(|| "crate".to_string())
}

fn graph(src: &Path) -> Graph {
    let mut modules = BTreeMap::new();
    read_modules(src, "", &mut modules);
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let mut g = Graph::new();
    for (module, code) in &modules {
        let base: Vec<String> =
            if module == "crate" { Vec::new() } else { module.split("::").map(str::to_string).collect() };
        let parent = &base[..base.len().saturating_sub(1)];
        // Children declared with `mod name;` are named by their bare name.
        let mut roots: Vec<(String, Vec<String>)> =
            vec![("crate::".to_string(), Vec::new()), ("super::".to_string(), parent.to_vec())];
        for line in code.lines() {
            let l = line.trim_start().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
            if let Some(name) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                let mut child = base.clone();
                child.push(name.trim().to_string());
                roots.push((format!("{}::", name.trim()), child));
            }
        }
        let deps = g.entry(module.clone()).or_default();
        for (root, abs) in &roots {
            let mut from = 0;
            while let Some(i) = code[from..].find(root.as_str()) {
                let at = from + i;
                from = at + root.len();
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| is_ident(c) || c == ':') {
                    continue;
                }
                for p in paths(&code[from..]) {
                    let full: Vec<String> = abs.iter().cloned().chain(p).collect();
                    let dep = resolve(&full, &known);
                    if &dep != module {
                        deps.insert(dep);
                    }
                }
            }
        }
    }
    g
}

fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(n: &str, g: &Graph, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[i..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    g.keys().find_map(|n| visit(n, g, &mut state, &mut Vec::new()))
}

fn src_graph() -> Graph {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (m, deps) in &g {
        println!("{m:15} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    g
}

#[test]
fn the_parser_sees_use_trees_super_and_child_paths() {
    let got = paths("qcow2::{self, reader::Qcow2Layer};");
    assert_eq!(got, vec![vec!["qcow2".to_string()], vec!["qcow2".into(), "reader".into(), "Qcow2Layer".into()]]);
    assert_eq!(paths("info as inspect;"), vec![vec!["info".to_string()]]);
    assert_eq!(paths("a::{b::{C, D}, e}").len(), 3);

    let dir = std::env::temp_dir().join(format!("spcs-module-graph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("f")).expect("mkdir");
    let write = |p: &str, s: &str| std::fs::write(dir.join(p), s).expect("write");
    write("lib.rs", "pub mod a;\npub mod f;\n");
    write("a.rs", "// crate::f::x in a comment\nuse crate::f::{self, g::G};\n#[cfg(test)]\nuse crate::f::h;\n");
    write("f/mod.rs", "mod g;\npub use g::G;\nfn x() { crate::a::y() }\n");
    write("f/g.rs", "use super::x;\n");
    let g = graph(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let deps = |m: &str| g[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(deps("a"), ["f", "f::g"]);
    assert_eq!(deps("f"), ["a", "f::g"]);
    assert_eq!(deps("f::g"), ["f"]);
    assert!(find_cycle(&g).is_some());
}

#[test]
fn modules_have_no_cycle() {
    let g = src_graph();
    assert!(g.len() >= 15, "found only {} modules", g.len());
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn formats_depend_on_the_shared_vocabulary_not_on_each_other() {
    let g = src_graph();
    let allowed = |m: &str, ok: &[&str]| {
        let extra: Vec<&String> = g[m].iter().filter(|d| !ok.contains(&d.as_str())).collect();
        assert!(extra.is_empty(), "{m} must not depend on {extra:?}");
    };
    allowed("image", &["codec", "crypt", "error", "sys"]);
    // Encryption is shared vocabulary too (LUKS inside qcow2 and raw LUKS volumes).
    for shared in ["crypt", "crypt::luks1", "crypt::xts"] {
        allowed(shared, &["crypt", "crypt::luks1", "crypt::xts", "error"]);
    }
    for format in ["qcow2", "qcow2::reader", "qcow2::writer", "source::raw"] {
        allowed(format, &["codec", "crypt", "crypt::luks1", "error", "image", "sys", "qcow2"]);
    }
    for format in ["luks", "luks::writer"] {
        allowed(format, &["crypt", "crypt::luks1", "error", "image", "sys", "luks"]);
    }
    // The HTTP client knows no image format, and only downloads (and the bindings) use it.
    let http = ["http", "http::client", "http::stream", "http::url"];
    for m in http {
        allowed(m, &[&["error", "image"][..], &http[..]].concat());
    }
    for (m, deps) in &g {
        let uses_http = deps.iter().any(|d| http.contains(&d.as_str()));
        let may = http.contains(&m.as_str()) || m == "download" || m.starts_with("download::") || m == "py";
        assert!(!uses_http || may, "{m} must not depend on the HTTP client");
    }
    // A download has no backing chain: it maps one layer, never opens a source.
    assert!(!g["download"].iter().any(|d| d.starts_with("source")), "download uses {:?}", g["download"]);
    // The engine moves pieces into a target; packing is the formats' business.
    assert!(!g["pipeline"].iter().any(|d| d.starts_with("qcow2")), "pipeline uses {:?}", g["pipeline"]);
}
