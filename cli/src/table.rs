//! Aligned text tables: a header and rows of cells, each column as wide as
//! its widest cell.

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

#[cfg(test)]
mod tests {
    use super::*;

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
