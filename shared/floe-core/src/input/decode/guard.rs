//! A guard for numbers that arrow-cast's decimal parser misreads. `parse_decimal` (arrow-cast 58, called by
//! arrow-json for decimal columns) counts significant digits in a `u8` and accumulates the exponent in an `i16`,
//! both unchecked. A value with hundreds of digits or an exponent of five or more digits therefore panics where
//! overflow checks are on, and wraps silently in release builds: `1e65537` would load as `10`. Found by
//! `cargo fuzz` (target `record`). Such a value fits no decimal column anyway, so a record holding one under a
//! decimal field's key is rejected before arrow-json sees it.
//!
//! The check is cheap on the hot path: a record is only tokenized if a quick scan finds a long exponent or a long
//! run of digits somewhere in it (free text such as `be12345` also triggers the tokenizer; only values under
//! decimal keys are judged).

use arrow_schema::{DataType, Field};

/// More digits than any decimal column holds (38), far below where the parser's counters overflow.
const MAX_DIGITS: usize = 200;
/// Exponents up to ±9999 are parsed safely; no decimal or double holds more.
const MAX_EXPONENT_DIGITS: usize = 4;

#[derive(Debug, Default)]
pub(crate) struct DecimalGuard {
    /// JSON keys whose values (or array elements) arrow-json parses as decimals.
    keys: Vec<String>,
    /// A map with decimal values: any key may hold one.
    any_key: bool,
}

impl DecimalGuard {
    /// The guard for the fields of the value schema arrow-json decodes.
    pub(crate) fn new<'a>(fields: impl IntoIterator<Item = &'a Field>) -> DecimalGuard {
        let mut guard = DecimalGuard::default();
        for field in fields {
            guard.collect(field.name(), field.data_type());
        }
        guard.keys.sort();
        guard.keys.dedup();
        guard
    }

    fn collect(&mut self, name: &str, data_type: &DataType) {
        match data_type {
            DataType::Decimal128(..) | DataType::Decimal256(..) => self.keys.push(name.to_string()),
            DataType::Struct(fields) => fields.iter().for_each(|f| self.collect(f.name(), f.data_type())),
            // Elements of a list are read under the list's key.
            DataType::List(item) | DataType::LargeList(item) => self.collect(name, item.data_type()),
            // Map values sit under arbitrary keys.
            DataType::Map(entries, _) => self.any_key |= holds_decimal(entries.data_type()),
            _ => {}
        }
    }

    /// Why a record value must not reach arrow-json's decimal parser, if it must not.
    pub(crate) fn check(&self, value: &[u8]) -> Option<String> {
        if (self.keys.is_empty() && !self.any_key) || !(long_exponent(value) || long_digit_run(value)) {
            return None;
        }
        let mut key: &[u8] = b"";
        let mut i = 0;
        while i < value.len() {
            match value[i] {
                b'"' => {
                    let end = string_end(value, i + 1);
                    let text = &value[i + 1..end.min(value.len())];
                    i = end + 1;
                    while i < value.len() && value[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    if value.get(i) == Some(&b':') {
                        key = text;
                    } else if let Some(reason) = self.judge(key, text) {
                        return Some(reason);
                    }
                }
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i < value.len() && matches!(value[i], b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E') {
                        i += 1;
                    }
                    if let Some(reason) = self.judge(key, &value[start..i]) {
                        return Some(reason);
                    }
                }
                _ => i += 1,
            }
        }
        None
    }

    fn judge(&self, key: &[u8], token: &[u8]) -> Option<String> {
        // A key with escapes (`"amo\u0075nt"`) may decode to a decimal field's name: judged too.
        let decimal_key = self.any_key || key.contains(&b'\\') || self.keys.iter().any(|k| k.as_bytes() == key);
        if !decimal_key || !out_of_range(token) {
            return None;
        }
        let shown = String::from_utf8_lossy(&token[..token.len().min(40)]);
        let more = if token.len() > 40 { "…" } else { "" };
        Some(format!(
            "field `{}`: number `{shown}{more}` is out of range for a decimal (more than {MAX_DIGITS} digits or an \
             exponent beyond ±9999)",
            String::from_utf8_lossy(key)
        ))
    }
}

fn holds_decimal(data_type: &DataType) -> bool {
    match data_type {
        DataType::Decimal128(..) | DataType::Decimal256(..) => true,
        DataType::Struct(fields) => fields.iter().any(|f| holds_decimal(f.data_type())),
        DataType::List(item) | DataType::LargeList(item) => holds_decimal(item.data_type()),
        DataType::Map(entries, _) => holds_decimal(entries.data_type()),
        _ => false,
    }
}

/// Index of the closing quote of a JSON string starting at `from` (after the opening quote).
fn string_end(value: &[u8], mut from: usize) -> usize {
    while from < value.len() {
        match value[from] {
            b'\\' => from += 2,
            b'"' => return from,
            _ => from += 1,
        }
    }
    value.len()
}

/// Whether a token (a JSON number, or a string under a decimal key) would overflow the parser's counters. The
/// parser accepts a sign anywhere in the exponent (`1e40-002` accumulates 40002) and counts every mantissa digit
/// before it meets a bad byte, so only digits are counted, wherever they are.
fn out_of_range(token: &[u8]) -> bool {
    let (mantissa, exponent) = match token.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(e) => (&token[..e], &token[e + 1..]),
        None => (token, &token[token.len()..]),
    };
    mantissa.iter().filter(|b| b.is_ascii_digit()).count() > MAX_DIGITS
        || exponent_digits(exponent) > MAX_EXPONENT_DIGITS
}

/// Significant digits of an exponent (leading zeros add nothing to the accumulator; signs may sit anywhere).
fn exponent_digits(exponent: &[u8]) -> usize {
    exponent.iter().filter(|b| b.is_ascii_digit()).skip_while(|b| **b == b'0').count()
}

/// Quick scan: an `e`/`E` followed by digits and signs holding more than four significant digits.
fn long_exponent(value: &[u8]) -> bool {
    memchr::memchr2_iter(b'e', b'E', value).any(|i| {
        let rest = &value[i + 1..];
        let run = rest.iter().take_while(|b| matches!(b, b'0'..=b'9' | b'+' | b'-')).count();
        exponent_digits(&rest[..run]) > MAX_EXPONENT_DIGITS
    })
}

/// Quick scan for a run of more than `MAX_DIGITS` digits: such a run covers two samples `MAX_DIGITS / 2` apart, so
/// only where two consecutive samples are digits is the run measured.
fn long_digit_run(value: &[u8]) -> bool {
    let stride = MAX_DIGITS / 2;
    (0..value.len().saturating_sub(stride)).step_by(stride).any(|i| {
        value[i].is_ascii_digit() && value[i + stride].is_ascii_digit() && {
            let start = value[..i].iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |p| p + 1);
            value[start..].iter().take_while(|b| b.is_ascii_digit()).count() > MAX_DIGITS
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::Fields;

    use super::*;

    fn guard() -> DecimalGuard {
        let item = Field::new(
            "item",
            DataType::Struct(Fields::from(vec![Field::new("price", DataType::Decimal128(10, 2), true)])),
            true,
        );
        DecimalGuard::new(&[
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("items", DataType::List(Arc::new(item)), true),
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Float64, true),
        ])
    }

    #[test]
    fn rejects_what_the_decimal_parser_overflows_on_under_decimal_keys() {
        let g = guard();
        assert_eq!(g.keys, ["amount", "price"]);
        // The input the fuzzer found (an exponent of 12 digits).
        let found = br#"{"event_i": "26-121T1:00z0-Z", "amount":116920954900000e000099000002}"#;
        let reason = g.check(found).unwrap();
        assert!(reason.contains("field `amount`: number `116920954900000e000099000002`"), "{reason}");
        assert!(g.check(br#"{"amount": "1e-65537"}"#).is_some(), "as a string and negative");
        assert!(g.check(br#"{"items": [{"sku": "a", "price": 1E+10000}]}"#).is_some(), "nested in a list");
        // The second input the fuzzer found: a sign inside the exponent (the parser reads 40002).
        assert!(g.check(br#"{"event_i": "26-11:00", "amount":11954900000e40-002}"#).is_some());
        assert!(g.check(br#"{"amount": "e99999"}"#).is_some(), "no mantissa");
        assert!(g.check(br#"{"amo\u0075nt": 1e99999}"#).is_some(), "an escaped key");
        let bad_tail = format!(r#"{{"amount": {}-1}}"#, "9".repeat(MAX_DIGITS + 1));
        assert!(g.check(bad_tail.as_bytes()).is_some(), "digits counted before a bad byte");
        let long = format!(r#"{{"amount": {}}}"#, "9".repeat(MAX_DIGITS + 1));
        assert!(g.check(long.as_bytes()).unwrap().contains("…"));
        let long_string = format!(r#"{{"amount": "0.{}"}}"#, "1".repeat(MAX_DIGITS + 1));
        assert!(g.check(long_string.as_bytes()).is_some());
    }

    #[test]
    fn lets_everything_else_through() {
        let g = guard();
        assert_eq!(g.check(br#"{"amount": 1e9999, "items": [{"price": "-3.5E-0002"}]}"#), None);
        assert_eq!(g.check(br#"{"amount": 0.0000000000000000000000000000000000000000001}"#), None, "44 digits");
        let map = Field::new_map(
            "attrs",
            "entries",
            Arc::new(Field::new("key", DataType::Utf8, false)),
            Arc::new(Field::new("value", DataType::Decimal128(5, 1), true)),
            false,
            true,
        );
        let any = DecimalGuard::new(&[map]);
        assert!(any.any_key && any.check(br#"{"attrs": {"whatever": 1e99999}}"#).is_some());
        // Long exponents and digit runs elsewhere are not parsed as decimals.
        assert_eq!(g.check(br#"{"id": "1e123456", "n": 1e99999, "amount": 3}"#), None);
        let digits = format!(r#"{{"id": "{}", "amount": 3}}"#, "7".repeat(1000));
        assert_eq!(g.check(digits.as_bytes()), None);
        // A key that merely contains a decimal key, and escaped quotes inside strings.
        assert_eq!(g.check(br#"{"amounts": 1e99999, "id": "a\"amount\":1e99999"}"#), None);
        // No decimal columns: nothing is scanned.
        let none = DecimalGuard::new(&[Field::new("id", DataType::Utf8, true)]);
        assert_eq!(none.check(br#"{"amount": 1e99999}"#), None);
    }

    #[test]
    fn quick_scans_find_what_the_tokenizer_judges() {
        assert!(long_exponent(b"1e12345") && long_exponent(b"2.E-000012345") && !long_exponent(b"1e1234"));
        assert!(long_exponent(b"1e40-002") && long_exponent(b"\"e99999") && !long_exponent(b"1e0-0001234"));
        for len in [MAX_DIGITS + 1, MAX_DIGITS + 57, 3 * MAX_DIGITS] {
            for lead in [0, 1, 37, 99, 150] {
                let text = format!("{}{}x", "x".repeat(lead), "5".repeat(len));
                assert!(long_digit_run(text.as_bytes()), "{len} digits after {lead}");
            }
        }
        assert!(!long_digit_run(format!("x{}x", "5".repeat(MAX_DIGITS)).as_bytes()));
    }
}
