//! What goes wrong in a config: [`BuildError`], a component's own account (which field, what),
//! and [`ConfigError`], the same located in the user's files by the loader (`crate::load`).

use std::fmt;
use std::ops::Range;

use super::yaml::Loc;

/// What a component reports when it cannot be built: the field (dotted path relative to the
/// component's settings, empty for the whole value) and, for programs, the byte range in it.
#[derive(Debug, Clone)]
pub struct BuildError {
    pub field: String,
    pub message: String,
    pub span: Option<Range<usize>>,
}

impl BuildError {
    pub fn new(field: &str, message: impl Into<String>) -> BuildError {
        BuildError {
            field: field.to_string(),
            message: message.into(),
            span: None,
        }
    }

    pub fn from_diagnostics(field: &str, diagnostics: Vec<Diagnostic>) -> Vec<BuildError> {
        diagnostics
            .into_iter()
            .map(|d| BuildError {
                field: field.to_string(),
                message: d.message,
                span: d.span,
            })
            .collect()
    }
}

/// One compile-time problem of a program (a VRL mapping, a template), with the byte range of
/// the source it points at.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Range<usize>>,
}

/// One problem in the user's config, located.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub loc: Loc,
    pub flow: Option<String>,
    pub component: Option<String>,
    pub field: String,
    pub message: String,
    pub suggestion: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.loc.line, self.loc.col)?;
        if let Some(flow) = &self.flow {
            write!(f, "flow `{flow}`, ")?;
        }
        if let Some(component) = &self.component {
            write!(f, "{component}, ")?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, "\n    help: did you mean `{s}`?")?;
        }
        Ok(())
    }
}
