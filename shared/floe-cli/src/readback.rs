//! Reading a committed table back through iceberg-rust's scan (an independent path from the writers).

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use iceberg::table::Table;

/// All rows of the table's current snapshot.
pub async fn scan_all(table: &Table) -> anyhow::Result<Vec<RecordBatch>> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(Vec::new());
    }
    let stream = table.scan().select_all().build()?.to_arrow().await?;
    Ok(stream.try_collect().await?)
}

/// Row count of the current snapshot.
pub async fn count_rows(table: &Table) -> anyhow::Result<usize> {
    Ok(scan_all(table).await?.iter().map(RecordBatch::num_rows).sum())
}

/// The first `n` rows, projected onto `columns`, as a text table.
pub async fn preview(table: &Table, columns: &[&str], n: usize) -> anyhow::Result<String> {
    if table.metadata().current_snapshot().is_none() {
        return Ok("(empty table)".into());
    }
    let stream = table.scan().select(columns.iter().copied()).build()?.to_arrow().await?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let mut rows = Vec::new();
    let mut left = n;
    for b in batches {
        if left == 0 {
            break;
        }
        let take = left.min(b.num_rows());
        rows.push(b.slice(0, take));
        left -= take;
    }
    Ok(arrow_cast::pretty::pretty_format_batches(&rows)?.to_string())
}

/// Every row of the current snapshot projected onto `columns`, each cell as display text, sorted: for exact
/// row-set comparisons in tests.
pub async fn rows(table: &Table, columns: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    rows_at(table, None, columns).await
}

/// [`rows`] of snapshot `snapshot` (time travel), or of the current one.
pub async fn rows_at(table: &Table, snapshot: Option<i64>, columns: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(Vec::new());
    }
    let mut scan = table.scan().select(columns.iter().copied());
    if let Some(id) = snapshot {
        scan = scan.snapshot_id(id);
    }
    let stream = scan.build()?.to_arrow().await?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let options = arrow_cast::display::FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in &batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    rows.sort();
    Ok(rows)
}
