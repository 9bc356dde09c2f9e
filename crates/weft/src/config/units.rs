//! Config values that carry their unit in the value: durations (`250ms`, `30s`, `1h`) and sizes
//! (`512KiB`, `5MiB`, `1MB`). A bare number is an error that says which unit to write, so `30`
//! never silently means seconds in one place and milliseconds in another.

use std::{fmt, time::Duration};

use serde::de::{self, Deserialize, Deserializer};

/// A duration written with its unit, e.g. `30s`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// A duration from text written with its unit.
    pub fn parse(s: &str) -> Result<Dur, String> {
        if s.trim().parse::<f64>().is_ok() {
            return Err(format!(
                "a duration needs a unit: write `{}s` or `{}ms`",
                s.trim(),
                s.trim()
            ));
        }
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            format!(
                "invalid duration `{s}`: {e} (write it with a unit, like `500ms`, `30s` or `5m`)"
            )
        })
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with its unit, like `500ms`, `30s` or `5m`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
                    E::custom(format_args!(
                        "invalid duration `{s}`: {e} (write it with a unit, like `500ms`, `30s` or `5m`)"
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                Err(E::custom(format_args!(
                    "a duration needs a unit: write `{n}s` or `{n}ms`"
                )))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
                self.visit_i64(n as i64)
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Dur, E> {
                Err(E::custom(format_args!(
                    "a duration needs a unit: write `{n}s`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes written with its unit, e.g. `5MiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Result<Size, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = (&s[..split], s[split..].trim());
        let number: f64 = number
            .parse()
            .map_err(|_| format!("invalid size `{s}`: expected a number followed by a unit"))?;
        let factor: u64 = match unit {
            "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "" => {
                return Err(format!(
                    "a size needs a unit: write `{number}B`, `{number}KiB` or `{number}MiB`"
                ));
            }
            other => {
                return Err(format!(
                    "unknown size unit `{other}`; use B, KB, MB, GB, KiB, MiB or GiB"
                ));
            }
        };
        Ok(Size((number * factor as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size with its unit, like `512KiB` or `5MiB`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                Size::parse(s).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                Size::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                self.visit_i64(n as i64)
            }
        }
        d.deserialize_any(V)
    }
}

/// Written as it is read, in hours at most (`30s`, `1m 30s`, `24h`), so a default shows in the
/// JSON Schema.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}", humantime::format_duration(self.0));
        }
        let ms = self.0.as_millis();
        let parts = [
            (ms / 3_600_000, "h"),
            (ms / 60_000 % 60, "m"),
            (ms / 1000 % 60, "s"),
            (ms % 1000, "ms"),
        ];
        let mut written = false;
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{}{n}{unit}", if written { " " } else { "" })?;
            written = true;
        }
        if !written {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Written in the largest unit that divides it (`5MiB`, `1MB`, `100B`).
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 6] = [
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
            (1_000_000_000, "GB"),
            (1_000_000, "MB"),
            (1_000, "KB"),
        ];
        match UNITS
            .iter()
            .find(|(unit, _)| self.0 > 0 && self.0.is_multiple_of(*unit))
        {
            Some((unit, name)) => write!(f, "{}{name}", self.0 / unit),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl serde::Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with its unit: `250ms`, `30s`, `5m`, `1h 30m`.",
            "pattern": "^\\s*[0-9]",
            "examples": ["500ms", "30s", "5m"]
        })
    }
}

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A size with its unit: B, KB, MB, GB, KiB, MiB or GiB (`512KiB`, `1MiB`).",
            "pattern": "^\\s*[0-9.]+\\s*(B|KB|kB|MB|GB|KiB|MiB|GiB)\\s*$",
            "examples": ["512KiB", "1MiB"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_need_units() {
        assert_eq!(Size::parse("5MiB").unwrap().0, 5 << 20);
        assert_eq!(Size::parse("1.5KB").unwrap().0, 1500);
        assert!(Size::parse("5").unwrap_err().contains("needs a unit"));
        assert!(
            Size::parse("5XB")
                .unwrap_err()
                .contains("unknown size unit")
        );
    }

    #[test]
    fn sizes_and_durations_print_as_they_are_read() {
        for text in ["5MiB", "1MB", "1KiB", "100B", "0B", "3GiB"] {
            assert_eq!(Size::parse(text).unwrap().to_string(), text);
        }
        for text in ["30s", "500ms", "1m 30s", "5m", "24h"] {
            let dur = Dur::parse(text).unwrap();
            assert_eq!(Dur::parse(&dur.to_string()).unwrap(), dur);
        }
        assert_eq!(Dur(Duration::from_secs(90)).to_string(), "1m 30s");
        assert_eq!(Dur(Duration::from_secs(86_400)).to_string(), "24h");
        assert_eq!(Dur(Duration::ZERO).to_string(), "0s");
    }
}
