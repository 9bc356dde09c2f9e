//! `${VAR}` and `${VAR:-default}` substitution inside parsed YAML scalars, and `${file:/path}`:
//! the contents of a file (a mounted secret), without its final line break.
//!
//! Substitution runs on the tree, never on the raw text: a value cannot break the YAML's quoting,
//! columns in error messages stay true, and a secret never appears in a syntax-error snippet.
//! `$${` writes a literal `${`. A plain scalar is re-typed after substitution, so
//! `count: ${N:-10}` is the integer 10.

use super::yaml::{Kind, Loc, Node, Style, resolve_plain};

#[derive(Debug)]
pub struct EnvError {
    pub loc: Loc,
    pub message: String,
}

/// Replaces every reference in `node` using `lookup`; returns one error per unset variable.
pub fn substitute(node: &mut Node, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<EnvError> {
    let mut errors = Vec::new();
    walk(node, lookup, &mut errors);
    errors
}

fn walk(node: &mut Node, lookup: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<EnvError>) {
    match &mut node.kind {
        Kind::Str(s) if s.contains('$') => {
            let before = errors.len();
            let mut sourced = Vec::new();
            let (out, problems) = expand_noting(s, lookup, &mut sourced);
            if out.contains("://") {
                super::secret::learn_url(&out, &sourced);
            }
            for message in problems {
                errors.push(EnvError {
                    loc: node.loc,
                    message,
                });
            }
            // With a variable missing, keep the text a string: re-typing it would add a second,
            // misleading error ("expected a string, found null") to the one reported here.
            // A file's contents (a secret) stay text: a numeric key must not become a number.
            node.kind =
                if node.style == Style::Plain && errors.len() == before && !s.contains("${file:") {
                    resolve_plain(&out)
                } else {
                    Kind::Str(out)
                };
        }
        Kind::Str(s) if s.contains("://") => super::secret::learn_url(s, &[]),
        Kind::Seq(items) => items.iter_mut().for_each(|n| walk(n, lookup, errors)),
        Kind::Map(entries) => entries
            .iter_mut()
            .for_each(|(_, v)| walk(v, lookup, errors)),
        _ => {}
    }
}

/// Expands references in one string; returns the result and what could not be expanded (an
/// unset variable, an unreadable file), said without any value.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    expand_noting(s, lookup, &mut Vec::new())
}

/// [`expand`], noting each value it put in (`sourced`).
fn expand_noting(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    sourced: &mut Vec<String>,
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(s.len());
    let mut missing = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${")
            && let Some(end) = body.find('}')
            && is_reference(&body[..end])
        {
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (reference, None),
            };
            let found = match name.strip_prefix("file:") {
                Some(path) => read_secret_file(path).map(|text| {
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    text.strip_suffix('\r').unwrap_or(text).to_string()
                }),
                None => lookup(name).ok_or_else(|| format!(
                    "environment variable `{name}` is not set and has no default (write `${{{name}:-default}}` to give one)"
                )),
            };
            match (found, default) {
                (Ok(v), _) => {
                    out.push_str(&v);
                    sourced.push(v);
                }
                (Err(_), Some(d)) => out.push_str(d),
                (Err(problem), None) => missing.push(problem),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    (out, missing)
}

/// The largest file `${file:}` reads: secrets are small, and a device or a log file named by
/// mistake must not be read whole.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A regular file's text, bounded; errors name the file, never its contents.
fn read_secret_file(path: &str) -> Result<String, String> {
    let fail = |why: String| format!("secret file `{path}` cannot be read: {why}");
    let bytes = super::files::read_bounded(path, MAX_SECRET_FILE).map_err(fail)?;
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))
}

fn is_reference(s: &str) -> bool {
    let name = s.split_once(":-").map_or(s, |(n, _)| n);
    if let Some(path) = name.strip_prefix("file:") {
        return !path.is_empty();
    }
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "example.com".to_string())
    }

    #[test]
    fn expands_set_defaulted_and_escaped_references() {
        assert_eq!(expand("http://${HOST}/x", &env).0, "http://example.com/x");
        assert_eq!(expand("${PORT:-8080}", &env).0, "8080");
        assert_eq!(expand("$${HOST} costs $5", &env).0, "${HOST} costs $5");
        assert!(expand("${NOPE}", &env).1[0].contains("`NOPE` is not set"));
    }

    #[test]
    fn file_references_read_the_file_without_its_last_line_break() {
        let path = std::env::temp_dir().join(format!("weft-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret value\n").unwrap();
        let text = format!("key=${{file:{}}};", path.display());
        assert_eq!(
            expand(&text, &env),
            ("key=s3cret value;".to_string(), vec![])
        );
        std::fs::remove_file(&path).unwrap();
        let (_, problems) = expand(&text, &env);
        assert!(
            problems[0].contains("cannot be read: entity not found"),
            "{problems:?}"
        );
        assert_eq!(
            expand(&format!("${{file:{}:-none}}", path.display()), &env).0,
            "none"
        );
        let (_, problems) = expand("${file:/dev/zero}", &env);
        assert!(problems[0].contains("not a regular file"), "{problems:?}");
    }

    #[test]
    fn a_file_secret_is_never_retyped() {
        let path = std::env::temp_dir().join(format!("weft-numeric-{}", std::process::id()));
        let digits = "12345678901234567890123456789012345678901";
        std::fs::write(&path, digits).unwrap();
        let mut node =
            crate::config::yaml::parse(&format!("k: ${{file:{}}}\n", path.display())).unwrap();
        assert!(substitute(&mut node, &env).is_empty());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(&node.get("k").unwrap().kind, Kind::Str(s) if s == digits));
    }

    #[test]
    fn plain_scalars_are_retyped() {
        let mut node = crate::config::yaml::parse("n: ${N:-10}\ns: '${N:-10}'\n").unwrap();
        assert!(substitute(&mut node, &env).is_empty());
        assert!(matches!(node.get("n").unwrap().kind, Kind::Int(10)));
        assert!(matches!(node.get("s").unwrap().kind, Kind::Str(_)));
    }
}
