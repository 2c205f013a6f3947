//! Chat parsing: any text a client can send. Besides not panicking, an accepted
//! message must obey the documented limits, so nothing invalid is ever relayed.
#![no_main]

use kindercam::auth::name::{DisplayName, MAX_NAME_CHARS};
use kindercam::chat::protocol::{parse_message_as, MAX_MESSAGE_CHARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ana = DisplayName::parse("Ana").unwrap();
    for session in [None, Some(&ana)] {
        if let Ok(msg) = parse_message_as(text, session) {
            let name_chars = msg.name.as_str().chars().count();
            assert!((1..=MAX_NAME_CHARS).contains(&name_chars));
            let message_chars = msg.message.chars().count();
            assert!((1..=MAX_MESSAGE_CHARS).contains(&message_chars));
            assert!(!msg.name.as_str().chars().any(char::is_control));
            assert!(!msg.message.chars().any(|c| c.is_control() && c != '\n'));
            if let Some(color) = &msg.color {
                assert!(color.len() == 6 && color.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            if let Some(name) = session {
                assert_eq!(&msg.name, name);
            }
        }
    }
});
