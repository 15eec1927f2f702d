//! Window aggregates as mergeable accumulators: a batch pre-aggregates into them, state cells store them (one
//! per window, group and source partition), and emission merges the cells of all partitions.
//!
//! Integer sums and averages are exact: they accumulate in 128 bits, so no realistic stream overflows them, and an
//! integer `sum` is a `decimal(38, 0)` column. (With 64 bits, a sum that overflowed in one window would fail every
//! retry of its batch and block the partition.) Floating-point sums depend on the order of addition like in any
//! engine.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::{Aggregate, AggregateFn, ColumnType};
use crate::stateful::hll::Hll;

/// One aggregate's running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Acc {
    Count {
        n: i64,
    },
    SumI {
        #[serde(with = "wide")]
        s: i128,
        n: i64,
    },
    SumF {
        s: f64,
        n: i64,
    },
    MinI {
        v: Option<i64>,
    },
    MaxI {
        v: Option<i64>,
    },
    MinF {
        v: Option<f64>,
    },
    MaxF {
        v: Option<f64>,
    },
    AvgI {
        #[serde(with = "wide")]
        s: i128,
        n: i64,
    },
    AvgF {
        s: f64,
        n: i64,
    },
    Distinct {
        h: Hll,
    },
}

/// A row's input to one aggregate.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    Null,
    Int(i64),
    Float(f64),
    Hash(u64),
}

impl Acc {
    pub fn new(a: &Aggregate) -> Acc {
        let float = matches!(a.column.as_ref().map(|c| &c.1), Some(ColumnType::Float | ColumnType::Double));
        match (a.function, float) {
            (AggregateFn::Count, _) => Acc::Count { n: 0 },
            (AggregateFn::Sum, false) => Acc::SumI { s: 0, n: 0 },
            (AggregateFn::Sum, true) => Acc::SumF { s: 0.0, n: 0 },
            (AggregateFn::Min, false) => Acc::MinI { v: None },
            (AggregateFn::Min, true) => Acc::MinF { v: None },
            (AggregateFn::Max, false) => Acc::MaxI { v: None },
            (AggregateFn::Max, true) => Acc::MaxF { v: None },
            (AggregateFn::Avg, false) => Acc::AvgI { s: 0, n: 0 },
            (AggregateFn::Avg, true) => Acc::AvgF { s: 0.0, n: 0 },
            (AggregateFn::ApproxDistinct, _) => Acc::Distinct { h: Hll::default() },
        }
    }

    /// Add one row; `count(*)` passes `Input::Int(1)`. Nulls are ignored, as in SQL.
    pub fn add(&mut self, x: Input) -> Result<(), String> {
        let overflow = || "sum overflows a 128-bit integer".to_string();
        match (self, x) {
            (_, Input::Null) => {}
            (Acc::Count { n }, _) => *n += 1,
            (Acc::SumI { s, n } | Acc::AvgI { s, n }, Input::Int(v)) => {
                *s = s.checked_add(i128::from(v)).ok_or_else(overflow)?;
                *n += 1;
            }
            (Acc::SumF { s, n } | Acc::AvgF { s, n }, Input::Float(v)) => {
                *s += v;
                *n += 1;
            }
            (Acc::MinI { v }, Input::Int(x)) => *v = Some(v.map_or(x, |v| v.min(x))),
            (Acc::MaxI { v }, Input::Int(x)) => *v = Some(v.map_or(x, |v| v.max(x))),
            (Acc::MinF { v }, Input::Float(x)) => *v = Some(v.map_or(x, |v| v.min(x))),
            (Acc::MaxF { v }, Input::Float(x)) => *v = Some(v.map_or(x, |v| v.max(x))),
            (Acc::Distinct { h }, Input::Hash(x)) => h.insert_hash(x),
            (acc, x) => return Err(format!("internal: input {x:?} does not fit accumulator {acc:?}")),
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &Acc) -> Result<(), String> {
        let overflow = || "sum overflows a 128-bit integer".to_string();
        match (self, other) {
            (Acc::Count { n }, Acc::Count { n: m }) => *n += m,
            (Acc::SumI { s, n }, Acc::SumI { s: t, n: m }) | (Acc::AvgI { s, n }, Acc::AvgI { s: t, n: m }) => {
                *s = s.checked_add(*t).ok_or_else(overflow)?;
                *n += m;
            }
            (Acc::SumF { s, n }, Acc::SumF { s: t, n: m }) | (Acc::AvgF { s, n }, Acc::AvgF { s: t, n: m }) => {
                *s += t;
                *n += m;
            }
            (Acc::MinI { v }, Acc::MinI { v: w }) => *v = opt(*v, *w, i64::min),
            (Acc::MaxI { v }, Acc::MaxI { v: w }) => *v = opt(*v, *w, i64::max),
            (Acc::MinF { v }, Acc::MinF { v: w }) => *v = opt(*v, *w, f64::min),
            (Acc::MaxF { v }, Acc::MaxF { v: w }) => *v = opt(*v, *w, f64::max),
            (Acc::Distinct { h }, Acc::Distinct { h: g }) => h.merge(g),
            (a, b) => return Err(format!("state of another aggregate ({b:?}) cannot merge into {a:?}")),
        }
        Ok(())
    }

    /// The aggregate's value as JSON, decoded into the window table's column type.
    pub fn value(&self) -> Value {
        match self {
            Acc::Count { n } => Value::from(*n),
            Acc::SumI { s, n } => {
                if *n > 0 {
                    // A decimal(38, 0) column; arrow-json reads decimals from strings exactly.
                    Value::from(s.to_string())
                } else {
                    Value::Null
                }
            }
            Acc::SumF { s, n } => {
                if *n > 0 {
                    Value::from(*s)
                } else {
                    Value::Null
                }
            }
            Acc::MinI { v } | Acc::MaxI { v } => v.map_or(Value::Null, Value::from),
            Acc::MinF { v } | Acc::MaxF { v } => v.map_or(Value::Null, Value::from),
            Acc::AvgI { s, n } => {
                if *n > 0 {
                    Value::from(*s as f64 / *n as f64)
                } else {
                    Value::Null
                }
            }
            Acc::AvgF { s, n } => {
                if *n > 0 {
                    Value::from(s / *n as f64)
                } else {
                    Value::Null
                }
            }
            Acc::Distinct { h } => Value::from(h.estimate()),
        }
    }
}

/// 128-bit sums in state: a JSON number while they fit 64 bits (state written before sums were widened reads
/// back unchanged), a string beyond.
mod wide {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(*v) {
            Ok(small) => serializer.serialize_i64(small),
            Err(_) => serializer.serialize_str(&v.to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wide {
            Small(i64),
            Text(String),
        }
        match Wide::deserialize(deserializer)? {
            Wide::Small(v) => Ok(i128::from(v)),
            Wide::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn opt<T: Copy>(a: Option<T>, b: Option<T>, f: fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Merge `other` into `into`, aggregate by aggregate.
pub fn merge_all(into: &mut [Acc], other: &[Acc]) -> Result<(), String> {
    if into.len() != other.len() {
        return Err("window state has a different number of aggregates than the pipeline file".into());
    }
    into.iter_mut().zip(other).try_for_each(|(a, b)| a.merge(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulators_add_merge_and_ignore_nulls() {
        let mut a = Acc::SumI { s: 0, n: 0 };
        assert_eq!(a.value(), Value::Null);
        a.add(Input::Int(5)).unwrap();
        a.add(Input::Null).unwrap();
        let mut b = Acc::SumI { s: 0, n: 0 };
        b.add(Input::Int(-2)).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.value(), Value::from("3"));
        let mut avg = Acc::AvgI { s: 0, n: 0 };
        for x in [1, 2] {
            avg.add(Input::Int(x)).unwrap();
        }
        assert_eq!(avg.value(), Value::from(1.5));
        let mut max = Acc::MaxI { v: None };
        max.merge(&Acc::MaxI { v: Some(7) }).unwrap();
        max.add(Input::Int(3)).unwrap();
        assert_eq!(max.value(), Value::from(7));
        // A sum past the 64-bit range (one window of large values) is exact, and survives the state round trip.
        let mut big = Acc::SumI { s: i64::MAX.into(), n: 1 };
        big.add(Input::Int(i64::MAX)).unwrap();
        assert_eq!(big.value(), Value::from("18446744073709551614"));
        let json = serde_json::to_string(&big).unwrap();
        assert_eq!(serde_json::from_str::<Acc>(&json).unwrap(), big);
        // State written before sums were widened reads back.
        let old: Acc = serde_json::from_str(r#"{"t":"SumI","s":-4,"n":2}"#).unwrap();
        assert_eq!(old, Acc::SumI { s: -4, n: 2 });
        let mut huge = Acc::SumI { s: i128::MAX, n: 1 };
        assert!(huge.add(Input::Int(1)).unwrap_err().contains("overflows"));
        assert!(Acc::Count { n: 0 }.merge(&Acc::MaxI { v: None }).is_err());
    }
}
