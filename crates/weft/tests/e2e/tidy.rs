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
    for kind in ["inputs", "processors", "outputs"] {
        for entry in std::fs::read_dir(root.join("src").join(kind)).unwrap() {
            let name = entry
                .unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name != "mod" {
                assert!(
                    readme.contains(&format!("| `{name}` |")),
                    "README's table lacks `{name}`"
                );
            }
        }
    }
}
