//! A serde `Deserializer` over a [`Node`], so component config structs stay plain serde types
//! while every error still knows the `line:col` and field path where it happened, and a misspelt
//! field or component name gets a "did you mean".
//!
//! Scalars are coerced where a user would expect it: a number where a string is wanted
//! (`X-Retry: 3` as a header value) and a numeric string where a number is wanted (a value that
//! came from `${VAR}` inside quotes).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{Kind, Loc, Node};

#[derive(Debug, Clone)]
pub struct DeError {
    pub message: String,
    pub loc: Option<Loc>,
    /// Field path from the deserialized root, innermost last.
    pub path: Vec<String>,
    pub suggestion: Option<String>,
    /// For an unknown variant: the known ones, so a plain value (`delivery: durabel`) can be
    /// told apart from a component kind in the message.
    variants: Option<&'static [&'static str]>,
}

impl DeError {
    fn at(mut self, loc: Loc) -> Self {
        // Line 0 marks a synthetic node (settings left out entirely): keep looking outward.
        if loc.line > 0 {
            self.loc.get_or_insert(loc);
        }
        self
    }

    fn within(mut self, segment: String) -> Self {
        self.path.insert(0, segment);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            loc: None,
            path: Vec::new(),
            suggestion: None,
            variants: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Self::custom(format_args!(
            "unknown field `{field}`; expected one of: {}",
            expected.join(", ")
        ));
        e.suggestion = did_you_mean(field, expected.iter().copied());
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Self::custom(format_args!(
            "unknown component `{variant}`; known ones are: {}",
            expected.join(", ")
        ));
        e.suggestion = did_you_mean(variant, expected.iter().copied());
        e.variants = Some(expected);
        e
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

/// `` `a`, `b` or `c` ``.
fn alternatives(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "nothing".into(),
    }
}

/// Deserializes `T` from `node`, attaching location and path to any error.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node)).map_err(|e| e.at(node.loc))
}

pub struct NodeDe<'a>(pub &'a Node);

impl<'a> NodeDe<'a> {
    fn invalid(&self, expected: &str) -> DeError {
        <DeError as de::Error>::custom(format_args!(
            "expected {expected}, found {}",
            self.0.type_name()
        ))
        .at(self.0.loc)
    }

    fn scalar_string(&self) -> Option<String> {
        match &self.0.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let value: Option<$ty> = match &self.0.kind {
                Kind::Int(i) => (*i).try_into().ok(),
                Kind::Str(s) => s.trim().parse().ok(),
                _ => return Err(self.invalid("an integer")),
            };
            match value {
                Some(v) => visitor.$visit(v).map_err(|e: DeError| e.at(self.0.loc)),
                None => Err(<DeError as de::Error>::custom(format_args!(
                    "expected an integer that fits {}",
                    stringify!($ty)
                ))
                .at(self.0.loc)),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let loc = self.0.loc;
        match &self.0.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => visitor.visit_i64(*i),
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                index: 0,
            }),
            Kind::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
                key: String::new(),
            }),
        }
        .map_err(|e| e.at(loc))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Str(s) if s == "true" || s == "false" => visitor.visit_bool(s == "true"),
            _ => Err(self.invalid("`true` or `false`")),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Int(i) => visitor.visit_f64(*i as f64),
            Kind::Str(s) if s.trim().parse::<f64>().is_ok() => {
                visitor.visit_f64(s.trim().parse().unwrap_or_default())
            }
            _ => Err(self.invalid("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let loc = self.0.loc;
        match &self.0.kind {
            Kind::Str(s) => visitor.visit_str(s),
            _ => match self.scalar_string() {
                Some(s) => visitor.visit_string(s),
                None => Err(self.invalid("a string")),
            },
        }
        .map_err(|e| e.at(loc))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.kind {
            Kind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.kind {
            Kind::Null => visitor.visit_unit(),
            _ => Err(self.invalid("nothing (null)")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Map(entries) if entries.is_empty() => visitor.visit_unit(),
            _ => Err(self.invalid("no settings (`{}`)")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Seq(_) => self.deserialize_any(visitor),
            _ => Err(self.invalid("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Map(_) => self.deserialize_any(visitor),
            // `drop:` with nothing after it means "no settings".
            Kind::Null => visitor
                .visit_map(MapDe {
                    entries: [].iter(),
                    value: None,
                    key: String::new(),
                })
                .map_err(|e| e.at(self.0.loc)),
            _ => Err(self.invalid("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let loc = self.0.loc;
        match &self.0.kind {
            Kind::Str(_) => visitor.visit_enum(EnumDe {
                variant: self.0,
                value: None,
            }),
            Kind::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumDe {
                variant: &entries[0].0,
                value: Some(&entries[0].1),
            }),
            Kind::Map(entries) if entries.len() > 1 => {
                Err(<DeError as de::Error>::custom(format_args!(
                    "expected exactly one key naming the kind, found {}: {}",
                    entries.len(),
                    entries
                        .iter()
                        .filter_map(|(k, _)| NodeDe(k).scalar_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            _ => Err(self.invalid("a name or a single-key mapping")),
        }
        .map_err(|e| e.at(loc))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDe(item))
            .map(Some)
            .map_err(|e| e.at(item.loc).within(format!("[{index}]")))
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    key: String,
}

impl<'de> de::MapAccess<'de> for MapDe<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        self.key = NodeDe(key).scalar_string().unwrap_or_default();
        seed.deserialize(NodeDe(key))
            .map(Some)
            .map_err(|e| e.at(key.loc).within(self.key.clone()))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let value = self.value.take().expect("value follows key");
        seed.deserialize(NodeDe(value))
            .map_err(|e| e.at(value.loc).within(std::mem::take(&mut self.key)))
    }
}

struct EnumDe<'a> {
    variant: &'a Node,
    value: Option<&'a Node>,
}

impl<'de> de::EnumAccess<'de> for EnumDe<'de> {
    type Error = DeError;
    type Variant = VariantDe<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantDe<'de>), DeError> {
        let name = NodeDe(self.variant).scalar_string().unwrap_or_default();
        let variant = seed.deserialize(NodeDe(self.variant)).map_err(|mut e| {
            // A bare word names a value (`delivery: durable`), not a component with settings.
            if let (None, Some(expected)) = (self.value, e.variants) {
                e.message = format!("unknown value `{name}`; use {}", alternatives(expected));
            }
            e.at(self.variant.loc)
        })?;
        Ok((
            variant,
            VariantDe {
                value: self.value,
                name,
                loc: self.variant.loc,
            },
        ))
    }
}

struct VariantDe<'a> {
    value: Option<&'a Node>,
    name: String,
    loc: Loc,
}

impl<'de> VariantDe<'de> {
    fn node(&self) -> Result<&'de Node, DeError> {
        self.value.ok_or_else(|| {
            <DeError as de::Error>::custom(format_args!("`{}` needs settings", self.name))
                .at(self.loc)
        })
    }
}

impl<'de> de::VariantAccess<'de> for VariantDe<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value.map(|n| &n.kind) {
            None | Some(Kind::Null) => Ok(()),
            Some(Kind::Map(m)) if m.is_empty() => Ok(()),
            Some(_) => Err(<DeError as de::Error>::custom(format_args!(
                "`{}` takes no settings",
                self.name
            ))
            .at(self.loc)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(node) => seed
                .deserialize(NodeDe(node))
                .map_err(|e| e.at(node.loc).within(self.name.clone())),
            // `stdout` alone, with no settings: deserialize from an empty mapping.
            None => {
                static EMPTY: Node = Node {
                    kind: Kind::Null,
                    loc: Loc { line: 0, col: 0 },
                    style: super::yaml::Style::Plain,
                };
                seed.deserialize(NodeDe(&EMPTY))
                    .map_err(|e| e.at(self.loc).within(self.name.clone()))
            }
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(NodeDe(self.node()?), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(NodeDe(self.node()?), visitor)
    }
}

impl<'de> IntoDeserializer<'de, DeError> for &'de Node {
    type Deserializer = NodeDe<'de>;
    fn into_deserializer(self) -> NodeDe<'de> {
        NodeDe(self)
    }
}

/// A field that takes one string or a list of them.
pub fn one_or_many<'de, D: de::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Strings;

    impl<'de> Visitor<'de> for Strings {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            Ok(vec![text.to_string()])
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                all.push(s);
            }
            Ok(all)
        }
    }

    d.deserialize_any(Strings)
}

/// For component configs that have a short form: a bare scalar stands for the config built by
/// `short` from its text, a mapping is deserialized as `T` (with `T`'s own field checks and
/// error locations).
pub fn scalar_or_map<'de, D, T>(
    deserializer: D,
    short: impl FnOnce(String) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
    T: de::Deserialize<'de>,
{
    struct Either<T, F>(Option<F>, std::marker::PhantomData<T>);

    impl<'de, T, F> Visitor<'de> for Either<T, F>
    where
        T: de::Deserialize<'de>,
        F: FnOnce(String) -> Result<T, String>,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a value or a mapping of settings")
        }

        fn visit_str<E: de::Error>(mut self, text: &str) -> Result<T, E> {
            let short = self.0.take().expect("visited once");
            short(text.to_string()).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            self.visit_str(&n.to_string())
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            self.visit_str(&n.to_string())
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_any(Either(Some(short), std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        address: String,
        #[serde(default)]
        max_body: Option<u32>,
    }

    #[derive(Deserialize, Debug, schemars::JsonSchema)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Input {
        HttpServer(Server),
        Stdin,
    }

    fn parse(text: &str) -> Node {
        crate::config::yaml::parse(text).unwrap()
    }

    #[test]
    fn unknown_field_has_location_path_and_suggestion() {
        let node = parse("http_server:\n  address: x\n  max_bdy: 3\n");
        let err = from_node::<Input>(&node).unwrap_err();
        assert_eq!(err.loc, Some(Loc { line: 3, col: 3 }));
        assert_eq!(err.path, vec!["http_server", "max_bdy"]);
        assert_eq!(err.suggestion.as_deref(), Some("max_body"));
    }

    #[test]
    fn unknown_variant_suggests_the_component() {
        let node = parse("htp_server:\n  address: x\n");
        let err = from_node::<Input>(&node).unwrap_err();
        assert_eq!(err.loc, Some(Loc { line: 1, col: 1 }));
        assert_eq!(err.suggestion.as_deref(), Some("http_server"));
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let node = parse("http_server:\n  address: x\n  max_body: [1]\n");
        let err = from_node::<Input>(&node).unwrap_err();
        assert_eq!(err.loc, Some(Loc { line: 3, col: 13 }));
        assert!(
            err.message.contains("expected an integer"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bare_unit_variant_and_coercions() {
        assert!(matches!(
            from_node::<Input>(&parse("stdin")).unwrap(),
            Input::Stdin
        ));
        let server: Input =
            from_node(&parse("http_server: {address: 8080, max_body: '12'}")).unwrap();
        let Input::HttpServer(s) = server else {
            panic!()
        };
        assert_eq!((s.address.as_str(), s.max_body), ("8080", Some(12)));
    }
}
