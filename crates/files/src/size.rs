//! A byte size as a person writes it on a command line (`1048576`, `500MB`,
//! `10GiB`), for the bounds on what one copy may write: the agent's
//! `--max-copy-bytes` and `guestcomm cp --max-bytes`.

/// Parses a byte size: a whole number of bytes, or a number with a decimal
/// (`KB`, `MB`, `GB`, ...) or binary (`KiB`, `MiB`, `GiB`, ...) unit. The
/// error is the line a command-line parser shows.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("invalid size {text:?}: {e} (e.g. 500MB, 10GiB)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_decimal_and_binary_units_are_accepted_and_others_refused() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("10GiB"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        for bad in ["", "lots", "-1", "5XB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid size {bad:?}: "))
                    && err.ends_with(" (e.g. 500MB, 10GiB)"),
                "{err}"
            );
        }
    }
}
