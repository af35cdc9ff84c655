//! Go's `strconv.Quote`, used by BuildKit's syntax-tree dump format.

/// Quotes `s` the way Go's `strconv.Quote` does (printable Unicode kept, the rest escaped).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_printable(c) => out.push(c),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7F}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and ASCII space.
/// Rust's std has no general-category table, so the non-printable classes are listed:
/// controls, separators other than space, format characters, private use and
/// noncharacters. Unassigned code points are treated as printable (rare in Dockerfiles).
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if u < 0x7F {
        return u >= 0x20;
    }
    if u < 0xA1 {
        return false; // DEL, C1 controls and NO-BREAK SPACE
    }
    const NOT_PRINTABLE: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x1680, 0x1680),
        (0x180E, 0x180E),
        (0x2000, 0x200F),
        (0x2028, 0x202F),
        (0x205F, 0x2064),
        (0x2066, 0x206F),
        (0x3000, 0x3000),
        (0xD800, 0xF8FF),
        (0xFDD0, 0xFDEF),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
        (0xF0000, 0x10FFFF),
    ];
    if u & 0xFFFE == 0xFFFE {
        return false; // U+xFFFE and U+xFFFF are noncharacters in every plane
    }
    !NOT_PRINTABLE.iter().any(|&(lo, hi)| u >= lo && u <= hi)
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{0}"), r#""\t\n\x00""#);
        assert_eq!(go_quote("♥ ☃"), "\"♥ ☃\"");
        assert_eq!(go_quote("\u{a0}\u{7f}"), r#""\u00a0\x7f""#);
        assert_eq!(go_quote("\u{feff}\u{10ffff}"), r#""\ufeff\U0010ffff""#);
    }
}
