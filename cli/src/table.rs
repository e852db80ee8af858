//! Aligned text tables (a header and rows of cells, each column as wide as
//! its widest cell) and the cells the commands put in them.

use std::time::{Duration, SystemTime};

use tcpnet::Meta;

/// A table being built.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as the header has titles).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// The lines of the table, each indented by `indent` spaces, with no
    /// trailing blanks; cells are cut to fit in `width` columns (with `…`).
    pub(crate) fn lines(&self, indent: usize, width: Option<usize>) -> Vec<String> {
        let chars = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| chars(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(chars(cell));
            }
        }
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|row| {
                let mut line = " ".repeat(indent);
                for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.push_str(&" ".repeat(w - chars(cell) + 2));
                    }
                }
                let line = line.trim_end().to_string();
                match width {
                    Some(width) if chars(&line) > width && width > 0 => {
                        let mut cut: String = line.chars().take(width - 1).collect();
                        cut.push('…');
                        cut
                    }
                    _ => line,
                }
            })
            .collect()
    }
}

/// `1 node`, `2 nodes`.
pub(crate) fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A span of time in the largest unit that fits: `420ms`, `4s`, `3m`,
/// `2h`, `5d`.
pub(crate) fn span(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// How long ago `then` was: `4s ago`; a time after `now` (another host's
/// clock ahead of this one's) says so: `in 3m`.
pub(crate) fn ago(now: SystemTime, then: SystemTime) -> String {
    match now.duration_since(then) {
        Ok(d) => format!("{} ago", span(d)),
        Err(ahead) => format!("in {}", span(ahead.duration())),
    }
}

/// Milliseconds with a fraction, for round trips: `0.31 ms`, `12.4 ms`.
pub(crate) fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Milliseconds as a JSON number, to the microsecond.
pub(crate) fn ms_json(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Metadata as a cell: `key=value,key=value`, or `-` when there is none.
pub(crate) fn meta_cell(meta: &Meta) -> String {
    if meta.is_empty() {
        return "-".to_string();
    }
    meta.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata as a JSON object.
pub(crate) fn meta_json(meta: &Meta) -> serde_json::Value {
    meta.iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A time as milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_times_ago() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(span(Duration::from_millis(420)), "420ms");
        assert_eq!(span(Duration::from_millis(59_999)), "59s");
        assert_eq!(span(Duration::from_secs(7200)), "2h");
        assert_eq!(ago(t, t - Duration::from_secs(180)), "3m ago");
        assert_eq!(ago(t, t + Duration::from_secs(90)), "in 1m");
        assert_eq!(millis(Duration::from_micros(310)), "0.31 ms");
        assert_eq!(millis(Duration::from_micros(12_440)), "12.4 ms");
    }

    #[test]
    fn columns_align_and_long_lines_are_cut() {
        let mut t = Table::new(&["ID", "PORT"]);
        t.row(vec!["0a".into(), "7".into()]);
        t.row(vec!["0abcdef".into(), "40000".into()]);
        assert_eq!(
            t.lines(2, None),
            ["  ID       PORT", "  0a       7", "  0abcdef  40000"]
        );
        assert_eq!(t.lines(0, Some(8))[2], "0abcdef…");
    }
}
