//! House rules that a reviewer would otherwise have to remember: every source file says what it
//! is for in a `//!` header, and every component is in the README's table.

use std::path::{Path, PathBuf};

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

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in [
        "weft/src",
        "weft/tests",
        "weft-bench/src",
        "weft-store/src",
        "weft-store/tests",
    ] {
        rust_files(&root.join(krate), &mut files);
    }
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

#[test]
fn every_component_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    // The registries, not the files: a folder may also hold what its components share.
    let names = [
        weft::inputs::NAMES,
        weft::processors::NAMES,
        weft::outputs::NAMES,
    ];
    for name in names.concat() {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README's table lacks `{name}`"
        );
    }
}

/// The layers of `crates/weft/src`, lowest first: a module may import only from layers below
/// its own, never from beside or above it (so no two top-level modules import each other, and
/// the three component kinds never import one another). `ARCHITECTURE.md` says why each sits
/// where it does.
const LAYERS: &[&[&str]] = &[
    &["config"],
    &["core"],
    &["clients", "telemetry"],
    &["server", "cluster"],
    &["inputs", "processors", "outputs"],
    &["load"],
    &["admin"],
    &["engine"],
    &["testing"],
    &["fuzzing"],
];

/// Edges the layering does not allow yet, each with a comment naming the work that removes it.
/// Empty: keep it so, or say here why not.
const KNOWN: &[(&str, &str)] = &[];

/// The code of a file with comments and its trailing `#[cfg(test)] mod tests` left out: tests
/// are leaves nothing imports, so they cannot tie the layers into a cycle.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::` paths, each with the first line
/// that names it; `crate::{a, b::c}` groups count each item.
fn crate_references(code: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let preceded = rest[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            rest = &rest[at + "crate::".len()..];
            if preceded {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                // A group may span lines; take what follows in the whole code.
                let start = code
                    .lines()
                    .take(number)
                    .map(|l| l.len() + 1)
                    .sum::<usize>()
                    + (line.len() - group.len());
                let mut depth = 0;
                let mut item = String::new();
                for c in code[start..].chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.push((item.trim().to_string(), number + 1));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                found.push((item.trim().to_string(), number + 1));
            } else {
                found.push((rest.to_string(), number + 1));
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(path, line)| {
            let name: String = path
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && name != "self").then_some((name, line))
        })
        .collect()
}

#[test]
fn layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer_of = |module: &str| LAYERS.iter().position(|layer| layer.contains(&module));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut known_seen = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        // The binary (`main.rs` and its `cmd/`) and the crate root sit above every layer.
        if relative == "main.rs" || relative == "lib.rs" || relative.starts_with("cmd/") {
            continue;
        }
        let module = relative.split('/').next().unwrap().trim_end_matches(".rs");
        let mine = layer_of(module)
            .unwrap_or_else(|| panic!("`{module}` is in no layer: add it to LAYERS"));
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for (target, line) in crate_references(&code) {
            if target == module {
                continue;
            }
            let theirs = layer_of(&target)
                .unwrap_or_else(|| panic!("{relative}:{line}: `crate::{target}` is in no layer"));
            if theirs < mine {
                continue;
            }
            if KNOWN.contains(&(relative.as_str(), target.as_str())) {
                known_seen.push((relative.clone(), target));
                continue;
            }
            wrong.push(format!(
                "src/{relative}:{line}: `{module}` imports `{target}`, which is {}",
                if theirs == mine {
                    "beside it"
                } else {
                    "above it"
                }
            ));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the layers (see ARCHITECTURE.md):\n{}",
        wrong.join("\n")
    );
    for (file, target) in KNOWN {
        assert!(
            known_seen.iter().any(|(f, t)| f == file && t == target),
            "{file} no longer imports {target}: take it out of KNOWN"
        );
    }
}

#[test]
fn the_layer_check_reads_imports_as_rustc_does() {
    let code = code_of(
        "use crate::core::Message;\n\
         use crate::{clients::{Resources, Shared},\n    config::BuildError};\n\
         // use crate::engine::Nothing;\n\
         let x = my_crate::inputs::y; let z = crate::outputs::send_boxed(a);\n\
         #[cfg(test)]\nmod tests {\n    use crate::testing::x;\n}\n",
    );
    let names: Vec<_> = crate_references(&code)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["core", "clients", "config", "outputs"]);
}
