//! The chat's wire protocol, the prototype's: a client sends
//! `{"name","message","color"}`, everyone receives `{"type":"usermsg",...}`,
//! comings and goings go out, gathered, as `{"type":"system","event":"online",...}`
//! (a joining client first gets its own `{"type":"system","event":"welcome"}`), a bad message earns its
//! sender alone `{"type":"error",...}`, and staff send `{"type":"delete"}` or
//! `{"type":"mute"}` commands. This file parses and checks what clients send and
//! serialises what they receive; it keeps no state.

use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::auth::name::clean_text;
use crate::auth::DisplayName;

pub const MAX_MESSAGE_CHARS: usize = 1000;

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Outgoing<'a> {
    Usermsg {
        id: u64,
        name: &'a str,
        /// The family's name, for a member logged in with a family code.
        #[serde(skip_serializing_if = "Option::is_none")]
        family: Option<&'a str>,
        message: &'a str,
        color: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        staff: bool,
    },
    System {
        message: &'a str,
        event: &'a str,
        online: usize,
    },
    /// Comings and goings, gathered (see `presence.rs`).
    #[serde(rename = "system")]
    Presence {
        message: &'a str,
        event: &'a str,
        online: usize,
        joined: usize,
        left: usize,
    },
    Delete {
        id: u64,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

impl Outgoing<'_> {
    pub(crate) fn to_text(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).expect("chat messages always serialise"))
    }
}

/// A staff command: `{"type":"delete","id":N}` or `{"type":"mute","id":N,"minutes":M}`.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Command {
    Delete { id: u64 },
    Mute { id: u64, minutes: Option<u64> },
}

/// A chat message that passed validation.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub name: DisplayName,
    pub message: String,
    /// Six hex digits, or `None` when the client's colour was missing or invalid.
    pub color: Option<String>,
}

/// Checks one client message; the error text goes back to the sender as is.
/// `session_name`, when given, replaces whatever name the JSON carries: a
/// logged-in parent cannot post as somebody else.
pub fn parse_message_as(
    text: &str,
    session_name: Option<&DisplayName>,
) -> Result<ChatMessage, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| "message is not valid JSON".to_owned())?;
    let object = value
        .as_object()
        .ok_or_else(|| "message must be a JSON object with name, message and color".to_owned())?;
    let field = |key: &str| -> Result<Option<&str>, String> {
        match object.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let json_name = field("name")?;
    let name = match session_name {
        Some(name) => name.clone(),
        None => DisplayName::parse(json_name.unwrap_or(""))?,
    };
    let message = clean_text(field("message")?.unwrap_or(""), true);
    let color = field("color")?;
    let message_chars = message.chars().count();
    if message_chars == 0 || message_chars > MAX_MESSAGE_CHARS {
        return Err(format!("message must be 1-{MAX_MESSAGE_CHARS} characters"));
    }
    let color = color
        .filter(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    Ok(ChatMessage {
        name,
        message,
        color,
    })
}

/// `{"type":"error",...}` for the sender alone.
pub fn error_text(code: &str, why: &str) -> Utf8Bytes {
    Outgoing::Error { code, message: why }.to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_message(text: &str) -> Result<ChatMessage, String> {
        parse_message_as(text, None)
    }

    #[test]
    fn accepts_prototype_messages() {
        let m = parse_message(r#"{"name":" Ana ","message":" hola ","color":"FF8800"}"#).unwrap();
        assert_eq!(
            m,
            ChatMessage {
                name: DisplayName::parse("Ana").unwrap(),
                message: "hola".into(),
                color: Some("FF8800".into())
            }
        );
    }

    #[test]
    fn invalid_colour_is_left_for_the_server_to_assign() {
        for color in [r#""red""#, r##""#ff0000""##, r#""12345""#, "null"] {
            let text = format!(r#"{{"name":"a","message":"b","color":{color}}}"#);
            assert_eq!(parse_message(&text).unwrap().color, None, "{color}");
        }
        assert_eq!(
            parse_message(r#"{"name":"a","message":"b"}"#)
                .unwrap()
                .color,
            None
        );
    }

    #[test]
    fn refuses_bad_shapes_and_lengths() {
        let err = |t: &str| parse_message(t).unwrap_err();
        assert!(err("not json").contains("JSON"));
        assert!(err("[1,2]").contains("object"));
        assert!(err(r#"{"name":5,"message":"x"}"#).contains("\"name\" must be a string"));
        assert!(err(r#"{"name":"a","message":["x"]}"#).contains("\"message\" must be a string"));
        assert!(err(r#"{"name":"a","message":"b","color":7}"#).contains("color"));
        assert!(err(r#"{"name":"   ","message":"x"}"#).contains("name"));
        assert!(err(&format!(r#"{{"name":"{}","message":"x"}}"#, "n".repeat(33))).contains("name"));
        assert!(err(&format!(
            r#"{{"name":"a","message":"{}"}}"#,
            "m".repeat(1001)
        ))
        .contains("message"));
        // Length counts characters, not bytes: 1000 accented letters are fine.
        assert!(parse_message(&format!(
            r#"{{"name":"ñ","message":"{}"}}"#,
            "é".repeat(1000)
        ))
        .is_ok());
    }

    #[test]
    fn session_name_replaces_the_json_name() {
        let ana = DisplayName::parse("Ana").unwrap();
        let m = parse_message_as(r#"{"name":"Directora","message":"hola"}"#, Some(&ana)).unwrap();
        assert_eq!(m.name, "Ana");
        assert_eq!(
            parse_message_as(r#"{"message":"hola"}"#, Some(&ana))
                .unwrap()
                .name,
            "Ana"
        );
    }

    #[test]
    fn strips_control_characters_but_keeps_line_breaks() {
        let m = parse_message("{\"name\":\"a\\u001b[31mb\",\"message\":\"x\\ny\\u0007\"}").unwrap();
        assert_eq!(m.name, "a[31mb");
        assert_eq!(m.message, "x\ny");
    }
}
