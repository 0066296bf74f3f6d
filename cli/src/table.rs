//! Every table the CLI prints, through one helper: columns sized to what they hold (ids of any
//! length line up), no borders, no wrapping (a pipe to `grep` or `awk` sees one row a line),
//! two spaces between columns, numbers right-aligned where asked. comfy-table does the
//! measuring, so wide characters in a hostname or message do not shift a column.

use comfy_table::{presets, CellAlignment, ContentArrangement};

/// A table being filled: headers first, then rows.
pub struct Table {
    inner: comfy_table::Table,
    right: Vec<usize>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        let mut inner = comfy_table::Table::new();
        inner
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(headers.iter().copied());
        Self {
            inner,
            right: Vec::new(),
        }
    }

    /// Aligns column `index` (from 0) to the right: counts and sizes.
    pub fn right(mut self, index: usize) -> Self {
        self.right.push(index);
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.inner.add_row(cells);
    }

    /// The table as lines, each ending in a newline, with no trailing spaces.
    pub fn render(mut self) -> String {
        let columns = self.inner.column_count();
        for index in 0..columns {
            if let Some(column) = self.inner.column_mut(index) {
                // No space before the first column, two between the others.
                column.set_padding((0, if index + 1 == columns { 0 } else { 2 }));
                if self.right.contains(&index) {
                    column.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        let mut out = String::new();
        for line in self.inner.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_lengths() {
        let mut t = Table::new(&["ID", "CPUS", "MESSAGE"]).right(1);
        t.row(vec!["a1".into(), "0.5".into(), "done".into()]);
        t.row(vec![
            "8c2d1e7a-5b3f-4a9e-9d1c-0f7e6b5a4c3d-S0".into(),
            "12.0".into(),
            String::new(),
        ]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // Every column starts at the same offset on every line.
        let start = |line: &str, needle: &str| line.find(needle).expect("cell");
        assert_eq!(
            start(lines[0], "MESSAGE"),
            start(lines[1], "done"),
            "{text}"
        );
        // Right-aligned: the cells end where the header ends.
        let end = |line: &str, needle: &str| start(line, needle) + needle.len();
        assert_eq!(end(lines[0], "CPUS"), end(lines[1], "0.5"), "{text}");
        assert_eq!(end(lines[0], "CPUS"), end(lines[2], "12.0"), "{text}");
        assert!(text.lines().all(|l| l == l.trim_end()), "{text:?}");
    }
}
