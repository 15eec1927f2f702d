//! How record values are encoded (`source.format`), how a registry-encoded value says which schema wrote it
//! (`source.framing`) and where those schemas are fetched (`source.registry`).

use super::raw::RawPipeline;
use super::{Column, ColumnSource, ColumnType, Evolve, Validator};
use crate::error::Result;

/// The encoding of record values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// JSON text, decoded against the declared columns (the default).
    #[default]
    Json,
    /// Avro binary written with a registered schema: each value names its writer schema (see [`Framing`]).
    Avro,
    /// Protobuf binary written with a registered schema; the frame also names the message type.
    Protobuf,
    /// JSON written with a registered JSON Schema (Confluent's `JSONSerializer`, Glue's JSON format): the value
    /// is framed like Avro, and its body is decoded as JSON against the declared columns.
    JsonSchema,
}

impl ValueFormat {
    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::Json => "json",
            ValueFormat::Avro => "avro",
            ValueFormat::Protobuf => "protobuf",
            ValueFormat::JsonSchema => "json-schema",
        }
    }
}

/// How a value names the registered schema that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Confluent's wire format: magic byte 0, a 4-byte big-endian schema id, the body.
    Confluent,
    /// AWS Glue Schema Registry: header version byte 3, compression byte (0 none, 5 zlib), the 16-byte schema
    /// version UUID, the body.
    Glue,
}

impl Framing {
    pub fn name(self) -> &'static str {
        match self {
            Framing::Confluent => "confluent",
            Framing::Glue => "glue",
        }
    }
}

/// Where schemas are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySpec {
    /// A Confluent-compatible registry (Confluent Platform or Cloud, Redpanda, Apicurio's ccompat API, Karapace)
    /// at this base URL. Credentials come from the deployment (`FLOE_REGISTRY_AUTH`), never the pipeline file.
    Confluent { url: String },
    /// The AWS Glue Schema Registry of the function's account and region, by registry name.
    Glue { registry: String },
}

/// `source.format`, `source.key_format`, `source.framing` and `source.registry` together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceFormat {
    pub value: ValueFormat,
    /// How keys are encoded when columns read into them (`from = "@key.<path>"`); `None`: keys are raw bytes.
    pub key: Option<ValueFormat>,
    /// `None` for JSON.
    pub framing: Option<Framing>,
    /// `None` for JSON.
    pub registry: Option<RegistrySpec>,
}

impl Validator<'_> {
    fn format_named(&self, f: &toml::Spanned<String>, field: &str) -> Result<ValueFormat> {
        match f.get_ref().as_str() {
            "json" => Ok(ValueFormat::Json),
            "avro" => Ok(ValueFormat::Avro),
            "protobuf" => Ok(ValueFormat::Protobuf),
            "json-schema" => Ok(ValueFormat::JsonSchema),
            other => self.err(f.span(), field, format!("`{other}` is not `json`, `avro`, `protobuf` or `json-schema`")),
        }
    }

    pub(super) fn source_format(&self, raw: &RawPipeline) -> Result<SourceFormat> {
        let source = &raw.source;
        let value = match &source.format {
            None => ValueFormat::Json,
            Some(f) => self.format_named(f, "source.format")?,
        };
        let key = match &source.key_format {
            None => None,
            Some(f) => Some(self.format_named(f, "source.key_format")?),
        };
        if value == ValueFormat::Json && key.is_none_or(|k| k == ValueFormat::Json) {
            if let Some(f) = &source.framing {
                return self.err(
                    f.span(),
                    "source.framing",
                    "applies only to registry formats (avro, protobuf, json-schema)",
                );
            }
            if let Some(r) = &source.registry {
                return self.err(
                    r.span(),
                    "source.registry",
                    "applies only to registry formats (avro, protobuf, json-schema)",
                );
            }
            return Ok(SourceFormat { key, ..SourceFormat::default() });
        }
        let named = if value == ValueFormat::Json { key.unwrap_or(value) } else { value };
        let framing = match &source.framing {
            None => Framing::Confluent,
            Some(f) => match f.get_ref().as_str() {
                "confluent" => Framing::Confluent,
                "glue" => Framing::Glue,
                other => {
                    return self.err(f.span(), "source.framing", format!("`{other}` is not `confluent` or `glue`"));
                }
            },
        };
        let Some(registry) = &source.registry else {
            return self.err(
                source.topics.span(),
                "source.registry",
                format!(
                    "format = \"{}\" needs a registry: add `registry = {{ url = \"https://…\" }}` (Confluent) or \
                     `registry = {{ glue = \"<registry name>\" }}` to [source]",
                    named.name()
                ),
            );
        };
        let spec = match (&registry.get_ref().url, &registry.get_ref().glue) {
            (Some(url), None) => {
                let u = url.get_ref();
                if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() {
                    return self.err(url.span(), "source.registry.url", format!("`{u}` is not an http(s) URL"));
                }
                if framing != Framing::Confluent {
                    return self.err(
                        url.span(),
                        "source.registry.url",
                        "a Confluent registry serves framing = \"confluent\"",
                    );
                }
                RegistrySpec::Confluent { url: u.trim_end_matches('/').to_string() }
            }
            (None, Some(glue)) => {
                let g = glue.get_ref();
                let ok = !g.is_empty()
                    && g.len() <= 255
                    && g.chars().all(|c| c.is_ascii_alphanumeric() || "-_$#.".contains(c));
                if !ok {
                    return self.err(glue.span(), "source.registry.glue", format!("`{g}` is not a Glue registry name"));
                }
                if framing != Framing::Glue {
                    return self.err(
                        glue.span(),
                        "source.registry.glue",
                        "the Glue registry serves framing = \"glue\"",
                    );
                }
                RegistrySpec::Glue { registry: g.clone() }
            }
            _ => return self.err(registry.span(), "source.registry", "set exactly one of `url` and `glue`"),
        };
        if let Some(c) = &source.changes {
            return self.err(
                c.span(),
                "source.changes",
                format!("change streams read JSON values and keys; format = \"{}\" appends", named.name()),
            );
        }
        Ok(SourceFormat { value, key, framing: Some(framing), registry: Some(spec) })
    }
}

impl Validator<'_> {
    /// What registry formats cannot do (yet): take new fields automatically, and keep the raw value as text
    /// (binary encodings are not UTF-8).
    pub(super) fn check_registry_columns(
        &self,
        raw: &RawPipeline,
        format: &SourceFormat,
        columns: &[Column],
        evolve: Evolve,
    ) -> Result<()> {
        for (i, c) in columns.iter().enumerate() {
            if !matches!(c.source, ColumnSource::KeyPath { .. }) {
                continue;
            }
            let span = raw.table.columns.get_ref()[i].from.as_ref().map_or(0..0, |f| f.span());
            let field = format!("table.columns[{i}].from");
            if format.key.is_none() {
                return self.err(
                    span,
                    &field,
                    "reading into the key needs source.key_format (json, avro, protobuf or json-schema)",
                );
            }
            if raw.source.changes.is_some() {
                return self.err(
                    span,
                    &field,
                    "a change stream reads its key itself: use `@key` or the value's fields",
                );
            }
        }
        if let (Evolve::Registry { .. }, Some(e)) = (evolve, &raw.table.evolve)
            && !matches!(format.value, ValueFormat::Avro | ValueFormat::Protobuf)
        {
            return self.err(
                e.span(),
                "table.evolve",
                format!(
                    "`registry` takes the fields of Avro and Protobuf writer schemas; format = \"{}\" {}",
                    format.value.name(),
                    if format.value == ValueFormat::Json {
                        "has none (`add-fields` discovers fields of JSON values)"
                    } else {
                        "is decoded as JSON: declare the columns"
                    }
                ),
            );
        }
        if format.value == ValueFormat::Json {
            return Ok(());
        }
        if let (Evolve::AddFields { .. }, Some(e)) = (evolve, &raw.table.evolve) {
            return self.err(
                e.span(),
                "table.evolve",
                format!(
                    "`add-fields` discovers fields of plain JSON; with format = \"{}\" declare the columns, or take \
                     the writer schemas' fields with `registry`",
                    format.value.name()
                ),
            );
        }
        for (i, c) in columns.iter().enumerate() {
            if c.source == ColumnSource::RawValue && c.ty != ColumnType::Binary {
                let span = raw.table.columns.get_ref()[i].ty.span();
                return self.err(
                    span,
                    &format!("table.columns[{i}].type"),
                    "`@value` of a registry format holds the framed bytes: declare the column as `binary`",
                );
            }
        }
        Ok(())
    }
}
