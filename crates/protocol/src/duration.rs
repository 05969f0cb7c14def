//! A span of time as a person writes it on a command line: a whole number
//! and a unit, `200ms`, `5s`, `10m`, `2h`, `7d`. Each command names the
//! units it takes (guestcommd's intervals: ms, s, m; `guestcomm audit
//! --since`: s, m, h, d), and this one parser reads them all.

/// A unit of [`parse_duration_ms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// `ms`.
    Millis,
    /// `s`.
    Seconds,
    /// `m`.
    Minutes,
    /// `h`.
    Hours,
    /// `d`.
    Days,
}

impl TimeUnit {
    /// How the unit is written after the number.
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Millis => "ms",
            Self::Seconds => "s",
            Self::Minutes => "m",
            Self::Hours => "h",
            Self::Days => "d",
        }
    }

    /// Milliseconds in one unit.
    pub const fn millis(self) -> i64 {
        match self {
            Self::Millis => 1,
            Self::Seconds => 1000,
            Self::Minutes => 60_000,
            Self::Hours => 3_600_000,
            Self::Days => 86_400_000,
        }
    }
}

/// Why a text is not a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// It does not end with one of the units taken.
    #[error("no unit")]
    NoUnit,
    /// What comes before the unit is not a whole number (`i64`).
    #[error("not a whole number")]
    NotANumber,
}

/// `text` in milliseconds (saturating; signed, zero included: the caller
/// refuses what it does not take), with one of `units`. The longest unit
/// that ends `text` is the one read, so `5ms` is 5 milliseconds wherever
/// `ms` is taken, and not a number of minutes where it is not.
pub fn parse_duration_ms(text: &str, units: &[TimeUnit]) -> Result<i64, DurationError> {
    let unit = units
        .iter()
        .filter(|u| text.ends_with(u.suffix()))
        .max_by_key(|u| u.suffix().len())
        .ok_or(DurationError::NoUnit)?;
    let number = &text[..text.len() - unit.suffix().len()];
    number
        .parse::<i64>()
        .map(|n| n.saturating_mul(unit.millis()))
        .map_err(|_| DurationError::NotANumber)
}

#[cfg(test)]
mod tests {
    use super::TimeUnit::{Days, Hours, Millis, Minutes, Seconds};
    use super::*;

    #[test]
    fn a_number_and_a_unit_taken_are_milliseconds() {
        let interval = [Millis, Seconds, Minutes];
        assert_eq!(parse_duration_ms("200ms", &interval), Ok(200));
        assert_eq!(parse_duration_ms("5s", &interval), Ok(5000));
        assert_eq!(parse_duration_ms("10m", &interval), Ok(600_000));
        assert_eq!(parse_duration_ms("+5s", &interval), Ok(5000));
        assert_eq!(parse_duration_ms("0s", &interval), Ok(0));
        assert_eq!(parse_duration_ms("-5s", &interval), Ok(-5000));
        assert_eq!(
            parse_duration_ms("2h", &interval),
            Err(DurationError::NoUnit)
        );
        assert_eq!(
            parse_duration_ms("5", &interval),
            Err(DurationError::NoUnit)
        );
        assert_eq!(
            parse_duration_ms("s", &interval),
            Err(DurationError::NotANumber)
        );
        assert_eq!(
            parse_duration_ms("1.5s", &interval),
            Err(DurationError::NotANumber)
        );
        assert_eq!(
            parse_duration_ms("9223372036854775807m", &interval),
            Ok(i64::MAX),
            "saturates"
        );
        let ago = [Seconds, Minutes, Hours, Days];
        assert_eq!(parse_duration_ms("2h", &ago), Ok(7_200_000));
        assert_eq!(parse_duration_ms("7d", &ago), Ok(604_800_000));
        // Without ms, "5ms" is "5m" and an s, not a number.
        assert_eq!(
            parse_duration_ms("5ms", &ago),
            Err(DurationError::NotANumber)
        );
    }
}
