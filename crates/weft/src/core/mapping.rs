//! The mapping language, behind weft's own small interface.
//!
//! Every `map`, `filter`, condition and `{{ expression }}` in a config is a VRL program, compiled
//! once at load and run per message. The rest of the engine talks to [`Mapping`] only, so VRL's
//! types stay in this file (and in [`Value`], the structured message value it re-exports); a jq
//! or Rhai step could be added beside it without touching the flow runtime.

use std::sync::OnceLock;

use vrl::compiler::{
    CompileConfig, ExpressionError, Function, Program, SecretTarget, Target, TargetValueRef,
    TimeZone, runtime::Runtime, runtime::Terminate, state::ExternalEnv,
};
use vrl::path::{OwnedTargetPath, PathPrefix};
use vrl::value::{KeyString, Secrets};
pub use vrl::value::{ObjectMap, Value};

fn functions() -> &'static [Box<dyn Function>] {
    static FUNCTIONS: OnceLock<Vec<Box<dyn Function>>> = OnceLock::new();
    FUNCTIONS.get_or_init(vrl::stdlib::all)
}

pub use crate::config::Diagnostic;

/// A run-time failure of a program on one message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

/// What a mutating run did to the message.
pub enum Outcome {
    /// The program finished; the value is its last expression.
    Done(Value),
    /// The program called `abort`: the message is dropped on purpose.
    Aborted,
}

/// A compiled program.
#[derive(Debug, Clone)]
pub struct Mapping {
    program: Program,
}

impl Mapping {
    pub fn compile(source: &str) -> Result<Mapping, Vec<Diagnostic>> {
        let external = ExternalEnv::default();
        match vrl::compiler::compile_with_external(
            source,
            functions(),
            &external,
            CompileConfig::default(),
        ) {
            Ok(result) => Ok(Mapping {
                program: result.program,
            }),
            Err(list) => Err(list
                .iter()
                .filter(|d| d.is_problem())
                .map(|d| {
                    let primary = d.labels.iter().find(|l| l.primary);
                    let mut message = d.message.clone();
                    if let Some(label) = primary
                        && !label.message.is_empty()
                        && label.message != d.message
                    {
                        message = format!("{message}: {}", label.message);
                    }
                    Diagnostic {
                        message,
                        span: primary.map(|l| l.span.range()),
                    }
                })
                .collect()),
        }
    }

    /// Whether the program reads message metadata (`%…`), so inputs can skip building it.
    pub fn reads_metadata(&self) -> bool {
        self.program
            .info()
            .target_queries
            .iter()
            .any(|path| path.prefix == PathPrefix::Metadata)
    }

    /// Runs the program with the message as a writable target (`map`).
    pub fn run(&self, value: &mut Value, metadata: &mut Value) -> Result<Outcome, MappingError> {
        let mut secrets = Secrets::default();
        let mut target = TargetValueRef {
            value,
            metadata,
            secrets: &mut secrets,
        };
        match Runtime::default().resolve(&mut target, &self.program, &TimeZone::default()) {
            Ok(v) => Ok(Outcome::Done(v)),
            Err(Terminate::Abort(ExpressionError::Abort { .. })) => Ok(Outcome::Aborted),
            Err(e) => Err(failure(e)),
        }
    }

    /// Evaluates the program against a message it may not change (conditions, templates).
    pub fn eval(&self, value: &Value, metadata: &Value) -> Result<Value, MappingError> {
        let mut target = ReadOnly { value, metadata };
        Runtime::default()
            .resolve(&mut target, &self.program, &TimeZone::default())
            .map_err(failure)
    }
}

/// A program's failure in the words its reader needs: an `assert`'s own message as written,
/// and a function's error as `name: what went wrong`, without VRL's byte offsets.
fn failure(e: Terminate) -> MappingError {
    if let Terminate::Error(ExpressionError::Error { notes, .. }) = &e
        && let Some(own) = notes.iter().find_map(|n| match n {
            vrl::diagnostic::Note::UserErrorMessage(own) => Some(own),
            _ => None,
        })
    {
        return MappingError(own.clone());
    }
    let text = e.to_string();
    // VRL spells a function's failure `function call error for "name" at (start:end): why`.
    if let Some(rest) = text.strip_prefix("function call error for \"")
        && let Some((name, rest)) = rest.split_once('"')
        && let Some((_, why)) = rest.split_once("): ")
    {
        return MappingError(format!("{name}: {why}"));
    }
    MappingError(text)
}

/// A target for programs that only read: no copy of the message is made per evaluation.
/// Assignments in such a program have no effect (VRL ignores a refused insert).
#[derive(Debug)]
struct ReadOnly<'a> {
    value: &'a Value,
    metadata: &'a Value,
}

const READ_ONLY: &str = "this expression may only read the message; use a `map` step to change it";

impl Target for ReadOnly<'_> {
    fn target_insert(&mut self, _: &OwnedTargetPath, _: Value) -> Result<(), String> {
        Err(READ_ONLY.into())
    }

    fn target_get(&self, path: &OwnedTargetPath) -> Result<Option<&Value>, String> {
        Ok(match path.prefix {
            PathPrefix::Event => self.value.get(&path.path),
            PathPrefix::Metadata => self.metadata.get(&path.path),
        })
    }

    fn target_get_mut(&mut self, _: &OwnedTargetPath) -> Result<Option<&mut Value>, String> {
        Err(READ_ONLY.into())
    }

    fn target_remove(&mut self, _: &OwnedTargetPath, _: bool) -> Result<Option<Value>, String> {
        Err(READ_ONLY.into())
    }
}

impl SecretTarget for ReadOnly<'_> {
    fn get_secret(&self, _: &str) -> Option<&str> {
        None
    }
    fn insert_secret(&mut self, _: &str, _: &str) {}
    fn remove_secret(&mut self, _: &str) {}
}

/// A program that is only a path into the message (`.items`, `.order.lines`, `.`): a step that
/// owns the message can take that value out of it instead of copying it.
#[derive(Debug, Clone)]
pub struct MessagePath(vrl::path::OwnedValuePath);

impl MessagePath {
    /// `None` when `source` is anything but such a path (the program then runs as VRL).
    pub fn parse(source: &str) -> Option<MessagePath> {
        let source = source.trim();
        if !source.starts_with('.') {
            return None;
        }
        match vrl::path::parse_target_path(source) {
            Ok(target) if target.prefix == PathPrefix::Event => Some(MessagePath(target.path)),
            _ => None,
        }
    }

    /// Takes the value at the path out of `value`: what the program would have given (null
    /// when there is none), without a copy.
    pub fn take(&self, value: &mut Value) -> Value {
        if self.0.is_root() {
            return std::mem::replace(value, Value::Null);
        }
        value.remove(&self.0, false).unwrap_or(Value::Null)
    }
}

/// An empty object, the starting value of generated messages and metadata.
pub fn empty_object() -> Value {
    Value::Object(ObjectMap::new())
}

/// Inserts `key` into an object value (does nothing to non-objects).
pub fn insert(object: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = object {
        map.insert(KeyString::from(key), value);
    }
}

/// Renders a value as text the way a template or a log line wants it: strings without quotes,
/// null as nothing, everything else as JSON.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::String(s) => AsRef::<str>::as_ref(s).to_string(),
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Timestamp(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

impl Mapping {
    /// Evaluates a key expression (dedupe, ordering, idempotency): a string, number or boolean
    /// as its text, arrays and objects as JSON. Null is an error, never a shared "empty" key
    /// that would merge unrelated messages.
    pub fn key(&self, value: &Value, metadata: &Value) -> Result<String, MappingError> {
        match self.eval(value, metadata)? {
            Value::Null => Err(MappingError("the key expression gave null".into())),
            other => Ok(to_text(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_filters_and_reports_errors() {
        let m = Mapping::compile(".b = upcase!(.a)").unwrap();
        let mut v: Value = serde_json::from_str::<Value>(r#"{"a":"x"}"#).unwrap();
        let mut meta = empty_object();
        assert!(matches!(
            m.run(&mut v, &mut meta).unwrap(),
            Outcome::Done(_)
        ));
        assert_eq!(to_text(v.as_object().unwrap().get("b").unwrap()), "X");

        let mut bad: Value = serde_json::from_str::<Value>(r#"{"a":1}"#).unwrap();
        let err = m.run(&mut bad, &mut meta).err().unwrap();
        assert_eq!(err.0, "upcase: expected string, got integer");

        // An assertion's own message, as written; without one, what failed.
        let checked =
            Mapping::compile(r#"assert!(.a == "x", message: "a must be x"); assert!(.z == 1)"#)
                .unwrap();
        let err = checked.run(&mut bad, &mut meta).err().unwrap();
        assert_eq!(err.0, "a must be x");
        let mut ok: Value = serde_json::from_str::<Value>(r#"{"a":"x"}"#).unwrap();
        let err = checked.run(&mut ok, &mut meta).err().unwrap();
        assert_eq!(err.0, "assert: assertion failed");

        let cond = Mapping::compile("exists(.b)").unwrap();
        assert_eq!(cond.eval(&v, &meta).unwrap(), Value::Boolean(true));
        // A condition cannot change the message it reads.
        let writer = Mapping::compile(".c = 1").unwrap();
        let _ = writer.eval(&v, &meta);
        assert!(v.as_object().unwrap().get("c").is_none());

        let aborting = Mapping::compile("abort").unwrap();
        assert!(matches!(
            aborting.run(&mut v, &mut meta).unwrap(),
            Outcome::Aborted
        ));
    }

    #[test]
    fn a_plain_path_is_taken_out_as_the_program_would_read_it() {
        let value = || serde_json::from_str::<Value>(r#"{"a":{"b":[1,2]},"c":3}"#).unwrap();
        for source in [
            ".a.b", ". ", ".c", ".missing", ".a.b[1]", ".a.b[-1]", ".a.b[5]", ".c.d", r#"."c""#,
        ] {
            let path = MessagePath::parse(source).unwrap_or_else(|| panic!("{source}"));
            let program = Mapping::compile(source).unwrap();
            let expected = program.eval(&value(), &empty_object()).unwrap();
            let mut taken_from = value();
            assert_eq!(path.take(&mut taken_from), expected, "{source}");
        }
        for source in [".a.b || []", "%meta", "[.a]", "upcase!(.c)", ".a.b\n.c"] {
            assert!(MessagePath::parse(source).is_none(), "{source}");
        }
    }

    #[test]
    fn knows_whether_it_reads_metadata() {
        assert!(
            Mapping::compile(".m = %http.method")
                .unwrap()
                .reads_metadata()
        );
        assert!(!Mapping::compile(".a = 1").unwrap().reads_metadata());
    }

    #[test]
    fn hashes_and_hmacs_are_there() {
        let program = Mapping::compile(
            r#"[sha2("abc", variant: "SHA-256"), md5("abc"), encode_base16(hmac("abc", "key", algorithm: "SHA-256"))]"#,
        )
        .unwrap();
        let got = program.eval(&Value::Null, &empty_object()).unwrap();
        assert_eq!(
            got,
            Value::Array(vec![
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                "900150983cd24fb0d6963f7d28e17f72".into(),
                "9c196e32dc0175f86f4b1cb89289d6619de6bee699e4c378e68309ed97a1a6ab".into(),
            ])
        );
    }

    #[test]
    fn compile_errors_carry_spans() {
        let errs = Mapping::compile(".a = 1\n.b = foo(").unwrap_err();
        assert!(!errs.is_empty());
        assert!(errs[0].span.as_ref().unwrap().start >= 7, "{errs:?}");
    }
}
