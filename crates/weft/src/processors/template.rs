//! `template`: renders the message as text from a MiniJinja template, for outputs that send
//! text (XML or CSV lines, e-mails, fixed-width records): the message becomes the rendered
//! string, which every output sends as it is. The message's fields are the template's
//! variables, its metadata is `meta`; a variable the message lacks fails the message rather than
//! rendering empty. `escape: xml` (or `html`) escapes every value put in.
//!
//! ```yaml
//! pipeline:
//!   - template:
//!       escape: xml
//!       source: |
//!         <order id="{{ id }}"><customer>{{ customer.name }}</customer></order>
//! ```

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::Step;
use crate::core::StepError;
use crate::core::{MappingError, Message, Value};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "TemplateProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The MiniJinja template.
    pub source: String,
    /// `none` (default), `xml` or `html`.
    #[serde(default)]
    pub escape: Escape,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Escape {
    #[default]
    None,
    Xml,
    Html,
}

impl super::Spec for Config {
    type Built = Template;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Template, Vec<BuildError>> {
        let mut env = minijinja::Environment::new();
        let escape = self.escape;
        env.set_auto_escape_callback(move |_| match escape {
            Escape::None => minijinja::AutoEscape::None,
            // HTML escaping covers XML's five characters (and is valid XML).
            Escape::Xml | Escape::Html => minijinja::AutoEscape::Html,
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned("template", self.source.clone())
            .map_err(|e| vec![BuildError::new("source", e.to_string())])?;
        Ok(Template { env })
    }
}

pub struct Template {
    env: minijinja::Environment<'static>,
}

impl Template {
    fn apply(&self, mut message: Message) -> Result<Option<Message>, MappingError> {
        let template = self
            .env
            .get_template("template")
            .map_err(|e| MappingError(e.to_string()))?;
        let mut context = match serde_json::to_value(&message.value) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), other);
                map
            }
            Err(e) => return Err(MappingError(e.to_string())),
        };
        context.insert(
            "meta".into(),
            serde_json::to_value(&message.metadata).unwrap_or_default(),
        );
        let text = template
            .render(&context)
            .map_err(|e| MappingError(format!("template: {e}")))?;
        message.value = Value::from(text);
        Ok(Some(message))
    }
}

impl crate::core::Immediate for Template {
    fn step(&self, message: Message) -> Result<Step, StepError> {
        Ok(self.apply(message)?.into())
    }

    fn reads_metadata(&self) -> bool {
        true
    }
}
