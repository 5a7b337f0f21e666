//! How the shell shows results: a table of the rows (comfy-table), a row count, and the
//! command tag.

use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};

use crate::value::ResultSet;

/// The text the shell prints for one statement's result.
pub fn render(result: &ResultSet) -> String {
    let mut out = String::new();
    if !result.columns.is_empty() {
        let mut table = Table::new();
        table
            .load_style(presets::ASCII_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(result.columns.iter().map(|c| c.name.as_str()));
        for row in &result.rows {
            table.add_row(row.values().iter().map(ToString::to_string));
        }
        out.push_str(&table.to_string());
        out.push('\n');
        let n = result.rows.len();
        out.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
    }
    // A result with rows has said how many; its tag (SELECT n, SHOW n, EXPLAIN n) would
    // say it again.
    if !result.tag.is_empty() && result.columns.is_empty() {
        out.push_str(&result.tag);
        if let Some(ts) = result.commit_ts {
            out.push_str(&format!(" (commit_ts {ts})"));
        }
        out.push('\n');
    }
    out
}

/// `Time: 1.234 ms`.
pub fn render_elapsed(elapsed: Duration) -> String {
    format!("Time: {:.3} ms\n", elapsed.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Column, Row, Value};
    use std::sync::Arc;

    #[test]
    fn rows_render_as_a_table_with_a_count() {
        let columns: Arc<[Column]> = vec![
            Column {
                name: "id".into(),
                type_name: "INT64".into(),
            },
            Column {
                name: "name".into(),
                type_name: "STRING".into(),
            },
        ]
        .into();
        let rows = vec![Row::new(
            columns.clone(),
            vec![Value::from(1i64), Value::Null],
        )];
        let result = ResultSet {
            tag: "SELECT 1".into(),
            columns,
            rows,
            rows_affected: 0,
            commit_ts: None,
            read_ts: None,
        };
        let text = render(&result);
        assert!(text.contains("| id | name |"), "{text}");
        assert!(text.contains("| 1  | NULL |"), "{text}");
        assert!(text.ends_with("(1 row)\n"), "{text}");
    }

    #[test]
    fn statements_without_rows_show_their_tag() {
        let result = ResultSet {
            tag: "INSERT 3".into(),
            columns: Vec::new().into(),
            rows: Vec::new(),
            rows_affected: 3,
            commit_ts: Some(42),
            read_ts: None,
        };
        assert_eq!(render(&result), "INSERT 3 (commit_ts 42)\n");
        assert_eq!(
            render_elapsed(Duration::from_micros(1500)),
            "Time: 1.500 ms\n"
        );
    }
}
