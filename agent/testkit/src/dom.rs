//! Reading a page's tables out of a DOM dump (the HTML Chromium prints after
//! the scripts ran), without an HTML parser: the panel writes plain tables.

/// The rows of the table with `id`: each row its cells' inner HTML (header
/// cells included). Empty when there is no such table.
pub fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let Some(start) = dom.find(&format!("id=\"{id}\"")) else {
        return Vec::new();
    };
    let section = &dom[start..];
    let section = &section[..section.find("</table>").unwrap_or(section.len())];
    section
        .split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<t")
                .skip(1)
                .filter(|c| c.starts_with('d') || c.starts_with('h'))
                .filter_map(|c| c.split_once('>').map(|(_, rest)| rest))
                .map(|c| c.split("</t").next().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

/// A cell's text without its tags.
pub fn text(cell: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in cell.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cells_and_text() {
        let dom = "<p>x</p><table id=\"t\"><tr><th>Name</th><th>State</th></tr>\
                   <tr><td><a href=\"/x\">web</a></td><td class=ok>running</td></tr></table>\
                   <table id=\"u\"><tr><td>other</td></tr></table>";
        let rows = table_rows(dom, "t");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], ["Name", "State"]);
        assert_eq!(text(&rows[1][0]), "web");
        assert_eq!(rows[1][1], "running");
        assert!(table_rows(dom, "none").is_empty());
    }
}
