//! Column types as written in the pipeline file, e.g. `long`, `decimal(12,2)`, `timestamptz`,
//! `list<struct<sku: string not null, qty: int>>`, `map<string, double>`.
//!
//! Only types that Athena reads from Iceberg tables are accepted (no `time`, `fixed`, `uuid`).

use std::fmt;

/// A parsed column type. Nested fields and list elements carry their own nullability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Decimal { precision: u32, scale: u32 },
    Date,
    Timestamp,
    Timestamptz,
    String,
    Binary,
    Struct(Vec<StructField>),
    List { element: Box<ColumnType>, element_required: bool },
    Map { key: Box<ColumnType>, value: Box<ColumnType>, value_required: bool },
}

/// A field of a `struct<…>` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructField {
    pub name: String,
    pub ty: ColumnType,
    pub required: bool,
}

impl ColumnType {
    /// Parse a type expression. Errors say what was expected and where (character position).
    pub fn parse(input: &str) -> Result<ColumnType, String> {
        let mut p = Parser { s: input, pos: 0 };
        let ty = p.ty()?;
        p.ws();
        if p.pos != input.len() {
            return Err(format!("unexpected `{}` at character {} of type `{input}`", &input[p.pos..], p.pos + 1));
        }
        Ok(ty)
    }

    /// True for timestamp and timestamptz.
    pub fn is_timestamp(&self) -> bool {
        matches!(self, ColumnType::Timestamp | ColumnType::Timestamptz)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nn = |r: bool| if r { " not null" } else { "" };
        match self {
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Int => f.write_str("int"),
            ColumnType::Long => f.write_str("long"),
            ColumnType::Float => f.write_str("float"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Timestamptz => f.write_str("timestamptz"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Binary => f.write_str("binary"),
            ColumnType::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, fl) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {}{}", fl.name, fl.ty, nn(fl.required))?;
                }
                f.write_str(">")
            }
            ColumnType::List { element, element_required } => write!(f, "list<{element}{}>", nn(*element_required)),
            ColumnType::Map { key, value, value_required } => write!(f, "map<{key}, {value}{}>", nn(*value_required)),
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.s[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn err<T>(&self, expected: &str) -> Result<T, String> {
        let rest = &self.s[self.pos..];
        let found = if rest.is_empty() { "end of type".to_string() } else { format!("`{rest}`") };
        Err(format!("expected {expected} at character {} of type `{}`, found {found}", self.pos + 1, self.s))
    }

    fn eat(&mut self, token: &str) -> bool {
        self.ws();
        if self.s[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) { Ok(()) } else { self.err(&format!("`{token}`")) }
    }

    fn ident(&mut self) -> Result<String, String> {
        self.ws();
        let rest = &self.s[self.pos..];
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if len == 0 {
            return self.err("a name");
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    fn number(&mut self) -> Result<u32, String> {
        self.ws();
        let rest = &self.s[self.pos..];
        let len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        match rest[..len].parse() {
            Ok(n) => {
                self.pos += len;
                Ok(n)
            }
            Err(_) => self.err("a number"),
        }
    }

    /// `not null` after a nested type.
    fn not_null(&mut self) -> Result<bool, String> {
        let save = self.pos;
        if self.eat("not") {
            self.ws();
            if self.eat("null") {
                return Ok(true);
            }
            self.pos = save;
            return self.err("`not null`");
        }
        Ok(false)
    }

    fn ty(&mut self) -> Result<ColumnType, String> {
        let start = self.pos;
        let name = self.ident()?.to_ascii_lowercase();
        Ok(match name.as_str() {
            "boolean" | "bool" => ColumnType::Boolean,
            "int" | "integer" => ColumnType::Int,
            "long" | "bigint" => ColumnType::Long,
            "float" => ColumnType::Float,
            "double" => ColumnType::Double,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "timestamptz" => ColumnType::Timestamptz,
            "string" => ColumnType::String,
            "binary" => ColumnType::Binary,
            "decimal" => {
                self.expect("(")?;
                let precision = self.number()?;
                self.expect(",")?;
                let scale = self.number()?;
                self.expect(")")?;
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(format!(
                        "decimal({precision},{scale}) is invalid: precision must be 1..=38 and scale <= precision"
                    ));
                }
                ColumnType::Decimal { precision, scale }
            }
            "struct" => {
                self.expect("<")?;
                let mut fields: Vec<StructField> = Vec::new();
                loop {
                    let name = self.ident()?;
                    if fields.iter().any(|f| f.name == name) {
                        return Err(format!("struct field `{name}` appears twice in type `{}`", self.s));
                    }
                    self.expect(":")?;
                    let ty = self.ty()?;
                    let required = self.not_null()?;
                    fields.push(StructField { name, ty, required });
                    if self.eat(">") {
                        break;
                    }
                    self.expect(",")?;
                }
                ColumnType::Struct(fields)
            }
            "list" | "array" => {
                self.expect("<")?;
                let element = Box::new(self.ty()?);
                let element_required = self.not_null()?;
                self.expect(">")?;
                ColumnType::List { element, element_required }
            }
            "map" => {
                self.expect("<")?;
                let key = self.ty()?;
                if key != ColumnType::String {
                    return Err(format!("map keys must be `string` (JSON object keys), found `{key}`"));
                }
                self.expect(",")?;
                let value = Box::new(self.ty()?);
                let value_required = self.not_null()?;
                self.expect(">")?;
                ColumnType::Map { key: Box::new(key), value, value_required }
            }
            "time" | "uuid" | "fixed" | "tinyint" | "smallint" | "char" => {
                return Err(format!("type `{name}` is not supported: Athena cannot read it from Iceberg tables"));
            }
            _ => {
                self.pos = start;
                return self.err(
                    "a type (boolean, int, long, float, double, decimal(p,s), date, timestamp, timestamptz, \
                     string, binary, struct<…>, list<…>, map<string, …>)",
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_types_and_round_trips() {
        let t = "list<struct<sku: string not null, qty: int, price: decimal(10,2)>>";
        let ty = ColumnType::parse(t).unwrap();
        let ColumnType::List { element, element_required } = &ty else { panic!("not a list: {ty:?}") };
        assert!(!element_required);
        let ColumnType::Struct(fields) = element.as_ref() else { panic!("not a struct") };
        assert_eq!(fields[0], StructField { name: "sku".into(), ty: ColumnType::String, required: true });
        assert_eq!(fields[2].ty, ColumnType::Decimal { precision: 10, scale: 2 });
        assert_eq!(ColumnType::parse(&ty.to_string()).unwrap(), ty);
        assert_eq!(
            ColumnType::parse("map<string, double not null>").unwrap().to_string(),
            "map<string, double not null>"
        );
    }

    #[test]
    fn rejects_bad_types_with_position() {
        let e = ColumnType::parse("struct<a: int,>").unwrap_err();
        assert!(e.contains("expected a name at character 15"), "{e}");
        assert!(ColumnType::parse("decimal(40,2)").unwrap_err().contains("precision must be 1..=38"));
        assert!(ColumnType::parse("time").unwrap_err().contains("Athena"));
        assert!(ColumnType::parse("map<int, string>").unwrap_err().contains("map keys must be"));
        assert!(ColumnType::parse("list<int> extra").unwrap_err().contains("unexpected `extra`"));
        assert!(ColumnType::parse("struct<a: int, a: long>").unwrap_err().contains("appears twice"));
    }
}
