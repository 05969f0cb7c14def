//! Property tests of the hybrid vsock reply parser: whatever a VMM (or a
//! guest pretending to be one) sends, `parse_reply` never panics and accepts
//! only `OK <digits>` (an optional trailing `\r` tolerated) that fits a u32.

use guestcomm_transport::hybrid::parse_reply;
use proptest::prelude::*;

/// The accepted language, spelled out independently of the parser.
fn is_ok_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.strip_prefix(b"OK ") {
        Some(digits) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        None => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_only_ok_digits_pass(
        line in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            // Near misses: the right shape with odd digits, spaces, case, suffixes.
            "(OK|ok|Ok|OK:|OK  | OK)? ?[0-9+\\- a-fx]{0,14}(\r|\r\r|\n| )?"
                .prop_map(String::into_bytes),
        ],
    ) {
        if let Some(n) = parse_reply(&line) {
            prop_assert!(is_ok_line(&line), "accepted {:?}", String::from_utf8_lossy(&line));
            let text = std::str::from_utf8(&line).unwrap();
            let digits = text.trim_end_matches('\r').trim_start_matches("OK ");
            prop_assert_eq!(digits.parse::<u64>().ok(), Some(u64::from(n)));
        }
    }

    #[test]
    fn every_u32_after_ok_is_accepted_leading_zeros_and_cr_included(
        n in any::<u32>(),
        zeros in 0usize..4,
        cr in any::<bool>(),
    ) {
        let line = format!("OK {}{n}{}", "0".repeat(zeros), if cr { "\r" } else { "" });
        prop_assert_eq!(parse_reply(line.as_bytes()), Some(n));
    }

    #[test]
    fn numbers_past_u32_are_refused(n in u64::from(u32::MAX) + 1..=u64::MAX) {
        prop_assert_eq!(parse_reply(format!("OK {n}").as_bytes()), None);
    }
}
