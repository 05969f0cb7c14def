//! Text from a peer, made safe to show on a terminal or in a log line:
//! [`escape_controls`] (and its `Display` form [`Escaped`]) writes every
//! character that could move the cursor, erase, recolour, retitle or
//! reorder what a reader sees as a visible escape, so that a guest, a
//! caller or a VM name can never forge a line of output.
//!
//! Escaped: C0 controls (`\n`, `\r`, `\t` and ESC included), DEL, C1
//! controls (U+0080 to U+009F, CSI among them), the bidirectional controls
//! that reorder text (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to
//! U+2069), the invisible formatting characters (U+00AD, U+180E, U+200B to
//! U+200D, U+2060 to U+2064, U+FEFF), and the line and paragraph separators
//! (U+2028, U+2029). `\n`, `\r` and `\t` become those two-character escapes,
//! the others `\u{XX}`. Everything else, backslashes included, stays as is,
//! so ordinary text (and every machine-readable output, which keeps its
//! own exact escaping) is unchanged.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` must not reach a terminal or a log line as it is.
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{ad}'
        | '\u{61c}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}')
}

/// `text` with every [`is_unsafe_char`] escaped (borrowed when there is none).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(Escaped(text).to_string())
}

/// Shows a string with [`escape_controls`] applied, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(is_unsafe_char) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_format_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape_controls("plain text, C:\\dir é 日本"),
            "plain text, C:\\dir é 日本"
        );
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nb\r\tc\u{1b}]0;t\u{7}\u{7f}\u{9b}2K"),
            "a\\nb\\r\\tc\\u{1b}]0;t\\u{7}\\u{7f}\\u{9b}2K"
        );
        assert_eq!(
            escape_controls("evil\u{202e}txt.exe\u{2066}\u{200b}\u{feff}\u{2028}"),
            "evil\\u{202e}txt.exe\\u{2066}\\u{200b}\\u{feff}\\u{2028}"
        );
        assert_eq!(Escaped("x\u{0}y").to_string(), "x\\u{0}y");
    }
}
