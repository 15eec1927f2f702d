//! An output's SQL rows as the plain per-row values window pre-aggregation reads (ingest, with the SQL engine).

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use serde_json::Value;

use crate::hash::hash64;
use crate::pipeline::{AggregateFn, ColumnType, WindowOutput};
use crate::stateful::aggregate::Input;

/// The columns a window reads from an output's SQL rows, as plain values per row.
pub struct WindowRows {
    /// Event time in milliseconds (`None`: null time).
    pub time_ms: Vec<Option<i64>>,
    /// Group key per row: a JSON array of the group values (also the state key).
    pub group: Vec<String>,
    /// Per aggregate, per row.
    pub inputs: Vec<Vec<Input>>,
    pub offsets: Vec<i64>,
}

impl WindowRows {
    pub fn extract(batch: &RecordBatch, window: &WindowOutput, offsets: Vec<i64>) -> Result<WindowRows, String> {
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("result has no column `{name}`"));
        let rows = batch.num_rows();
        let time = micros(column(&window.time_column)?)?;
        let time_ms = (0..rows).map(|i| (!time.is_null(i)).then(|| time.value(i).div_euclid(1000))).collect();
        let groups: Vec<Vec<Value>> =
            window.group_by.iter().map(|(n, _)| json_values(column(n)?)).collect::<Result<_, String>>()?;
        let group =
            (0..rows).map(|i| Value::Array(groups.iter().map(|g| g[i].clone()).collect()).to_string()).collect();
        let mut inputs = Vec::new();
        for a in &window.aggregates {
            inputs.push(match &a.column {
                None => vec![Input::Int(1); rows],
                Some((name, ty)) => {
                    let col = column(name)?;
                    match a.function {
                        AggregateFn::ApproxDistinct => hashes(col)?,
                        _ if matches!(ty, ColumnType::Float | ColumnType::Double) => {
                            let f = arrow_cast::cast(col, &DataType::Float64).map_err(|e| e.to_string())?;
                            let f = f.as_primitive::<Float64Type>();
                            (0..rows)
                                .map(|i| if f.is_null(i) { Input::Null } else { Input::Float(f.value(i)) })
                                .collect()
                        }
                        _ => {
                            let v = if ty.is_timestamp() { micros(col)? } else { int64(col)? };
                            (0..rows).map(|i| if v.is_null(i) { Input::Null } else { Input::Int(v.value(i)) }).collect()
                        }
                    }
                }
            });
        }
        Ok(WindowRows { time_ms, group, inputs, offsets })
    }
}

fn int64(col: &ArrayRef) -> Result<arrow_array::Int64Array, String> {
    let c = match col.data_type() {
        DataType::Date32 => {
            arrow_cast::cast(col, &DataType::Int32).and_then(|c| arrow_cast::cast(&c, &DataType::Int64))
        }
        _ => arrow_cast::cast(col, &DataType::Int64),
    };
    Ok(c.map_err(|e| e.to_string())?.as_primitive::<Int64Type>().clone())
}

/// Timestamps of any unit as microseconds.
fn micros(col: &ArrayRef) -> Result<arrow_array::Int64Array, String> {
    let DataType::Timestamp(_, tz) = col.data_type() else {
        return Err(format!("expected a timestamp column, found {}", col.data_type()));
    };
    let us = DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, tz.clone());
    let c = arrow_cast::cast(col, &us).map_err(|e| e.to_string())?;
    int64(&arrow_cast::cast(&c, &DataType::Int64).map_err(|e| e.to_string())?)
}

/// Group values as JSON scalars that arrow-json decodes back into the same column type (timestamps as
/// microseconds, dates as days).
fn json_values(col: &ArrayRef) -> Result<Vec<Value>, String> {
    let n = col.len();
    Ok(match col.data_type() {
        DataType::Boolean => {
            let b = col.as_boolean();
            (0..n).map(|i| if b.is_null(i) { Value::Null } else { Value::Bool(b.value(i)) }).collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = arrow_cast::cast(col, &DataType::Utf8).map_err(|e| e.to_string())?;
            let s = s.as_string::<i32>();
            (0..n).map(|i| if s.is_null(i) { Value::Null } else { Value::from(s.value(i)) }).collect()
        }
        DataType::Timestamp(..) => {
            let v = micros(col)?;
            (0..n).map(|i| if v.is_null(i) { Value::Null } else { Value::from(v.value(i)) }).collect()
        }
        _ => {
            let v = int64(col)?;
            (0..n).map(|i| if v.is_null(i) { Value::Null } else { Value::from(v.value(i)) }).collect()
        }
    })
}

/// Stable hashes of values for `approx_distinct`: the same value hashes the same whatever its integer width.
fn hashes(col: &ArrayRef) -> Result<Vec<Input>, String> {
    let n = col.len();
    Ok(match col.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let f = arrow_cast::cast(col, &DataType::Float64).map_err(|e| e.to_string())?;
            let f = f.as_primitive::<Float64Type>();
            (0..n)
                .map(
                    |i| {
                        if f.is_null(i) {
                            Input::Null
                        } else {
                            Input::Hash(hash64(&f.value(i).to_bits().to_le_bytes()))
                        }
                    },
                )
                .collect()
        }
        _ => json_values(col)?
            .into_iter()
            .map(|v| match v {
                Value::Null => Input::Null,
                Value::String(s) => Input::Hash(hash64(s.as_bytes())),
                other => Input::Hash(hash64(other.to_string().as_bytes())),
            })
            .collect(),
    })
}
