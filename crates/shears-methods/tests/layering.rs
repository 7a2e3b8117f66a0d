//! The crate's layers, checked over its `use` lines: no module imports one that imports it back
//! (directly or in a circle), no method imports another, and the shared steps import no method,
//! no registry and no pipeline. `cargo test -p shears-methods --test layering` shows a circle
//! with the files and the paths that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every source file, as its module path (`steps/cut`, `methods/paam/gates`), with its code up to
/// its unit tests (test code may reach anywhere), comments left out.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new(SRC), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(SRC).unwrap().with_extension("");
            let mut name = rel.to_string_lossy().replace('\\', "/");
            if let Some(parent) = name.strip_suffix("/mod") {
                name = parent.to_string();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = match text.find("#[cfg(test)]") {
                Some(i) => &text[..i],
                None => &text,
            };
            // Comments (doc links among them) import nothing.
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| format!("{l}\n"))
                .collect();
            (name, code)
        })
        .collect()
}

/// The node a module belongs to: a method's folder is one node (its files are one method).
fn node(module: &str) -> String {
    let parts: Vec<&str> = module.split('/').collect();
    if parts.len() >= 2 && parts[0] == "methods" {
        return format!("methods/{}", parts[1]);
    }
    module.to_string()
}

/// The modules `code` (of module `me`) names through `crate::` and `super::` paths, resolved to
/// the longest module path that is a file; names re-exported at the crate root resolve through
/// `lib.rs`'s `pub use` lines.
fn imports(
    me: &str,
    code: &str,
    known: &BTreeSet<String>,
    root: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let is_mod_rs = Path::new(SRC).join(me).join("mod.rs").exists();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let (base, skip): (Vec<String>, usize) = if rest.starts_with("crate::") {
            (Vec::new(), 7)
        } else if rest.starts_with("super::") && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let mut parent: Vec<String> = me.split('/').map(String::from).collect();
            if !is_mod_rs {
                parent.pop();
            }
            let mut skip = 0;
            let mut r = rest;
            while let Some(t) = r.strip_prefix("super::") {
                skip += 7;
                r = t;
                if skip > 7 {
                    parent.pop();
                }
            }
            (parent, skip)
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let path: String = code[i + skip..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut prefix = base.clone();
        prefix.extend(path.split("::").filter(|s| !s.is_empty()).map(String::from));
        // `a::{b, c::D}`: each name in the braces continues the path.
        let after = &code[i + skip + path.len()..];
        let mut paths = vec![prefix.clone()];
        if (path.is_empty() || path.ends_with("::")) && after.starts_with('{') {
            // The group up to its matching brace, each item (nested groups too) a path.
            let mut depth = 0;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(after.len(), |(k, _)| k);
            paths.extend(expand(&prefix, &after[1..end]));
        }
        for segs in paths {
            // The longest prefix that is a module file.
            let mut found = None;
            for k in (1..=segs.len()).rev() {
                let cand = segs[..k].join("/");
                if known.contains(&cand) {
                    found = Some(cand);
                    break;
                }
            }
            if found.is_none()
                && base.is_empty()
                && let Some(first) = segs.first()
            {
                found = root.get(first).cloned();
            }
            if let Some(f) = found
                && node(&f) != node(me)
            {
                out.insert(node(&f));
            }
        }
        i += skip + path.len().max(1);
    }
    out
}

/// The paths of a `{...}` group's items (its body given), each continuing `prefix`; nested
/// groups (`b::{c::Y, Z}`) continue their own prefix.
fn expand(prefix: &[String], body: &str) -> Vec<Vec<String>> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    let mut out = Vec::new();
    for item in items {
        let item = item.trim();
        let (head, group) = match item.find('{') {
            Some(k) => (
                &item[..k],
                Some(&item[k + 1..item.rfind('}').unwrap_or(item.len())]),
            ),
            None => (item, None),
        };
        let mut p = prefix.to_vec();
        p.extend(
            head.split("::")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')),
        );
        match group {
            Some(g) => out.extend(expand(&p, g)),
            None => out.push(p),
        }
    }
    out
}

/// `lib.rs`'s `pub use module::{names}` lines: name -> module.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let (path, names) = match rest.split_once("::{") {
            Some((p, n)) => (p.to_string(), n.trim_end_matches('}').to_string()),
            None => {
                let (p, n) = rest.rsplit_once("::").unwrap_or(("", rest));
                (p.to_string(), n.to_string())
            }
        };
        for n in names.split(',') {
            let n = n.trim();
            if !n.is_empty() && !path.is_empty() {
                out.insert(n.to_string(), path.replace("::", "/"));
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let root = root_exports(&mods["lib"]);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in &mods {
        if m == "lib" {
            continue;
        }
        g.entry(node(m))
            .or_default()
            .extend(imports(m, code, &known, &root));
    }
    g
}

#[test]
fn the_crate_has_no_import_circle() {
    let g = graph();
    // Depth-first search for a back edge; the stack is the circle.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut circle = stack[at..].to_vec();
                    circle.push(m.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, &g, &mut state, &mut stack) {
                panic!("import circle: {}", c.join(" -> "));
            }
        }
    }
    // The check sees the imports it should: the registry lists the methods, a method uses steps.
    assert!(
        g["registry"].contains("methods/paam"),
        "{:?}",
        g["registry"]
    );
    assert!(
        g["methods/slimming"].contains("steps/cut"),
        "{:?}",
        g["methods/slimming"]
    );
}

#[test]
fn no_method_imports_another_and_steps_import_no_method() {
    let g = graph();
    let above_steps = [
        "method", "registry", "pipeline", "oneshot", "front", "sweep",
    ];
    for (n, deps) in &g {
        for d in deps {
            if n.starts_with("methods/") {
                assert!(!d.starts_with("methods/"), "{n} imports {d}");
            }
            if n.starts_with("steps") || n == "config" || n == "report" || n == "run_dir" {
                assert!(
                    !d.starts_with("methods") && !above_steps.contains(&d.as_str()),
                    "{n} imports {d}, a layer above it"
                );
            }
        }
    }
}

#[test]
fn imports_are_read_through_groups_super_paths_and_root_exports() {
    let known: BTreeSet<String> = ["a", "b/c", "d", "methods/m/x", "steps"]
        .into_iter()
        .map(String::from)
        .collect();
    let root: BTreeMap<String, String> = [("Exported".to_string(), "d".to_string())].into();
    let code =
        "use crate::{a::X, b::{c::Y, Z}};\nuse super::x;\nfn f() { crate::Exported::new(); }\n";
    let got = imports("methods/m/y", code, &known, &root);
    let want: BTreeSet<String> = ["a", "b/c", "d"].into_iter().map(String::from).collect();
    // `super::x` is the method's own folder: not an import of another node.
    assert_eq!(got, want);
}
